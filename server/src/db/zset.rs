//! Sorted-set values with Redis 7.0's two encodings (OBJECT ENCODING names
//! them "listpack" and "skiplist").
//!
//! * **listpack** — while the set has at most `zset-max-listpack-entries`
//!   members, each at most `zset-max-listpack-value` bytes: one byte buffer
//!   of entries `varint(len) member score`, in (score, member) order. The
//!   score is a tagged zigzag varint when it is an integer of magnitude below
//!   2^53 (1 to 8 bytes, the common case of counters and timestamps), else
//!   the tag byte 0x01 and the 8-byte `f64`. No allocation per member, and
//!   an entry is never larger than Redis's listpack entry for the same pair;
//!   the buffer grows to the allocator's size class, as Redis reallocates
//!   its listpack to the exact size. Operations are linear scans, as in
//!   Redis. As in Redis, a -0 score is stored as 0 here.
//! * **skiplist** — Redis's `zskiplist` (up to 32 levels, p = 1/4, spans on
//!   every link, back pointers on level 0), plus a hash index member → node.
//!   Score, rank, by-rank, by-score and by-lex lookups are O(log n);
//!   removing a run of k elements is O(log n + k). No `unsafe` and no
//!   pointers: nodes live in arenas, one per node height, so a node is a
//!   `u32` (height, slot) and its links are contiguous; each link also
//!   carries the score of the node it points to, so a search step costs
//!   one cache miss, as Redis's inline level arrays do.
//!
//!   Removing a node frees its slot for the next insert of that height; once
//!   most of an arena is free it is compacted, keeping the nodes' order.
//!   Nodes thus never move to a higher slot, so ZSCAN walks the arenas slot
//!   by slot downwards (as the keyspace SCAN walks its table) and returns
//!   every member present for the whole scan at least once; and a random
//!   member is an array read or two.
//!
//! Order: by score, ties by member bytes (memcmp, shorter first). Scores are
//! never NaN inside a set (ZADD and ZINCRBY refuse them), so comparisons
//! with `<`/`==` form a total order; nothing here uses a comparison that
//! could panic. `-0` and `0` compare equal, as in Redis, and each keeps its
//! sign.
//!
//! Range helpers reproduce Redis's algorithms step by step (including how a
//! listpack lex range is a linear scan and a skiplist lex range a descent
//! through the levels), so results agree with Redis even for lex ranges over
//! members with different scores, where Redis documents the result as
//! unspecified — except that the skiplist's result then depends on the
//! random levels of its nodes, in Redis as here.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{BuildHasher, Hash as _, Hasher};

use hashbrown::hash_table::HashTable;
use hashbrown::DefaultHashBuilder;

use crate::sds::Sds;
use crate::varint::{read_varint, unzigzag, varint_len, write_varint, zigzag};

/// ZADD input flags (Redis's `ZADD_IN_*`).
pub const ZADD_NX: u8 = 1;
pub const ZADD_XX: u8 = 1 << 1;
pub const ZADD_GT: u8 = 1 << 2;
pub const ZADD_LT: u8 = 1 << 3;
pub const ZADD_INCR: u8 = 1 << 4;

/// The listpack thresholds (`zset-max-listpack-entries` / `-value`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_entries: usize,
    pub max_value: usize,
}

impl Limits {
    /// Redis 7.0's defaults (128 entries, 64 bytes).
    pub const DEFAULT: Limits = Limits {
        max_entries: 128,
        max_value: 64,
    };

    /// True if a set of `len` members, the longest `max_member` bytes, is
    /// listpack-encoded.
    pub fn fits(&self, len: usize, max_member: usize) -> bool {
        len <= self.max_entries && max_member <= self.max_value
    }
}

/// What [`ZSet::add`] did (Redis's `ZADD_OUT_*` flags plus the new score).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AddResult {
    /// New member.
    Added(f64),
    /// Existing member, score changed.
    Updated(f64),
    /// Existing member, same score (still "processed": INCR replies it).
    Unchanged(f64),
    /// Nothing done because of NX/XX/GT/LT.
    Nop,
    /// The score (or the incremented score) is NaN; nothing changed.
    Nan,
}

impl AddResult {
    /// The resulting score unless the operation was skipped.
    pub fn score(&self) -> Option<f64> {
        match *self {
            AddResult::Added(s) | AddResult::Updated(s) | AddResult::Unchanged(s) => Some(s),
            AddResult::Nop | AddResult::Nan => None,
        }
    }
}

/// A score as Redis 7.0 stores it in a listpack and ZSCAN prints it from
/// there: integers within ±2^62 as integers (`double2ll`), everything else
/// as `d2string` does (which matches `%.17g`, "inf", "-inf").
pub fn listpack_score_text(s: f64) -> String {
    const LIM: f64 = 4_611_686_018_427_387_904.0; // (double)(LLONG_MAX / 2)
    if s.is_finite() && s == s.trunc() && (-LIM..=LIM).contains(&s) {
        (s as i64).to_string()
    } else {
        crate::util::fmt_f64(s)
    }
}

/// The (score, member) order of a sorted set.
#[inline]
pub fn cmp_entry(s1: f64, m1: &[u8], s2: f64, m2: &[u8]) -> Ordering {
    if s1 < s2 {
        Ordering::Less
    } else if s1 > s2 {
        Ordering::Greater
    } else {
        m1.cmp(m2)
    }
}

/// A score interval (Redis's `zrangespec`); bounds are never NaN.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScoreRange {
    pub min: f64,
    pub max: f64,
    pub minex: bool,
    pub maxex: bool,
}

impl ScoreRange {
    #[inline]
    pub fn gte_min(&self, v: f64) -> bool {
        if self.minex {
            v > self.min
        } else {
            v >= self.min
        }
    }

    #[inline]
    pub fn lte_max(&self, v: f64) -> bool {
        if self.maxex {
            v < self.max
        } else {
            v <= self.max
        }
    }

    /// Ranges that can hold nothing (`min > max`, or equal with an open end).
    pub fn is_empty(&self) -> bool {
        self.min > self.max || (self.min == self.max && (self.minex || self.maxex))
    }
}

/// One end of a lex range: `-`, `+`, or a string (Redis's
/// `shared.minstring` / `shared.maxstring` / an sds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LexBound {
    Min,
    Max,
    Str(Vec<u8>),
}

/// A lex interval (Redis's `zlexrangespec`). `-` and `+` are parsed as
/// exclusive, as Redis does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LexRange {
    pub min: LexBound,
    pub minex: bool,
    pub max: LexBound,
    pub maxex: bool,
}

/// Redis's `sdscmplex`.
fn cmp_lex(a: &LexBound, b: &LexBound) -> Ordering {
    match (a, b) {
        (LexBound::Min, LexBound::Min) | (LexBound::Max, LexBound::Max) => Ordering::Equal,
        (LexBound::Min, _) | (_, LexBound::Max) => Ordering::Less,
        (LexBound::Max, _) | (_, LexBound::Min) => Ordering::Greater,
        (LexBound::Str(x), LexBound::Str(y)) => x.cmp(y),
    }
}

#[inline]
fn member_vs(m: &[u8], b: &LexBound) -> Ordering {
    match b {
        LexBound::Min => Ordering::Greater,
        LexBound::Max => Ordering::Less,
        LexBound::Str(s) => m.cmp(s),
    }
}

impl LexRange {
    #[inline]
    pub fn gte_min(&self, m: &[u8]) -> bool {
        let c = member_vs(m, &self.min);
        if self.minex {
            c == Ordering::Greater
        } else {
            c != Ordering::Less
        }
    }

    #[inline]
    pub fn lte_max(&self, m: &[u8]) -> bool {
        let c = member_vs(m, &self.max);
        if self.maxex {
            c == Ordering::Less
        } else {
            c != Ordering::Greater
        }
    }

    pub fn is_empty(&self) -> bool {
        let c = cmp_lex(&self.min, &self.max);
        c == Ordering::Greater || (c == Ordering::Equal && (self.minex || self.maxex))
    }
}

// ---------------------------------------------------------------------------
// listpack encoding
// ---------------------------------------------------------------------------

/// Tag byte of a score stored as a raw `f64` (integer scores start with an
/// even byte).
const FLOAT_TAG: u8 = 0x01;
/// Integers below this magnitude are exact in an `f64`.
const INT_LIMIT: f64 = 9_007_199_254_740_992.0;

/// The integer a score is stored as, if it is one (not `-0`).
#[inline]
fn score_int(s: f64) -> Option<i64> {
    if s.abs() < INT_LIMIT && s == s.trunc() && !(s == 0.0 && s.is_sign_negative()) {
        Some(s as i64)
    } else {
        None
    }
}

#[inline]
fn score_len(s: f64) -> usize {
    match score_int(s) {
        Some(i) => varint_len(zigzag(i) << 1),
        None => 9,
    }
}

#[inline]
fn write_score(dst: &mut [u8], s: f64) -> usize {
    match score_int(s) {
        Some(i) => write_varint(dst, zigzag(i) << 1),
        None => {
            dst[0] = FLOAT_TAG;
            dst[1..9].copy_from_slice(&s.to_le_bytes());
            9
        }
    }
}

#[inline]
fn read_score(buf: &[u8], p: usize) -> (f64, usize) {
    if buf[p] == FLOAT_TAG {
        let mut b = [0u8; 8];
        b.copy_from_slice(&buf[p + 1..p + 9]);
        (f64::from_le_bytes(b), p + 9)
    } else {
        let (u, q) = read_varint(buf, p);
        (unzigzag(u >> 1) as f64, q)
    }
}

/// The end of the score encoded at `p`.
#[inline]
fn skip_score(buf: &[u8], mut p: usize) -> usize {
    if buf[p] == FLOAT_TAG {
        return p + 9;
    }
    while buf[p] & 0x80 != 0 {
        p += 1;
    }
    p + 1
}

#[inline]
fn entry_len(m: &[u8], s: f64) -> usize {
    varint_len(m.len() as u64) + m.len() + score_len(s)
}

/// Decodes the entry at `p`: (member start, member end, score, next entry).
#[inline]
fn read_entry(buf: &[u8], p: usize) -> (usize, usize, f64, usize) {
    let (l, ms) = read_varint(buf, p);
    let me = ms + l as usize;
    let (s, next) = read_score(buf, me);
    (ms, me, s, next)
}

/// The listpack encoding: packed (member, score) entries in order.
#[derive(Clone, Default, PartialEq)]
pub struct Pack {
    buf: Vec<u8>,
    len: u32,
}

/// Ascending iterator over a [`Pack`].
pub struct PackIter<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for PackIter<'a> {
    type Item = (&'a [u8], f64);

    #[inline]
    fn next(&mut self) -> Option<(&'a [u8], f64)> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let (ms, me, s, next) = read_entry(self.buf, self.pos);
        self.pos = next;
        Some((&self.buf[ms..me], s))
    }
}

impl Pack {
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> PackIter<'_> {
        PackIter {
            buf: &self.buf,
            pos: 0,
        }
    }

    /// Entries with their byte offsets.
    fn entries_at(&self) -> Vec<(usize, &[u8], f64)> {
        let mut out = Vec::with_capacity(self.len());
        let mut p = 0;
        while p < self.buf.len() {
            let (ms, me, s, next) = read_entry(&self.buf, p);
            out.push((p, &self.buf[ms..me], s));
            p = next;
        }
        out
    }

    /// Byte offset and score of `m` (scores are only skipped on the way).
    fn find(&self, m: &[u8]) -> Option<(usize, f64)> {
        let buf = &self.buf[..];
        let mut p = 0;
        while p < buf.len() {
            let (l, ms) = read_varint(buf, p);
            let me = ms + l as usize;
            // Members often share a prefix ("user:123"): test the last
            // byte before calling memcmp.
            if l == m.len() as u64
                && (me == ms || buf[me - 1] == m[m.len() - 1])
                && &buf[ms..me] == m
            {
                return Some((p, read_score(buf, me).0));
            }
            p = skip_score(buf, me);
        }
        None
    }

    fn insert_at(&mut self, at: usize, m: &[u8], s: f64) {
        // Redis stores listpack scores that are integers as integers
        // (`double2ll`), which turns -0 into 0; the skiplist keeps -0.
        let s = if s == 0.0 { 0.0 } else { s };
        let n = entry_len(m, s);
        let old = self.buf.len();
        if self.buf.capacity() < old + n {
            // Grow to the end of the allocator's 16-byte size class (malloc
            // rounds `size + 8` up to 16 anyway): as compact as Redis's
            // exact reallocation, with fewer reallocations.
            let want = ((old + n + 8).div_ceil(16) * 16 - 8).max(old + n);
            self.buf.reserve_exact(want - old);
        }
        self.buf.resize(old + n, 0);
        self.buf.copy_within(at..old, at + n);
        let dst = &mut self.buf[at..at + n];
        let k = write_varint(dst, m.len() as u64);
        dst[k..k + m.len()].copy_from_slice(m);
        write_score(&mut dst[k + m.len()..], s);
        self.len += 1;
    }

    /// Inserts `m` (absent) at its place in the order (`zzlInsert`).
    fn insert(&mut self, m: &[u8], s: f64) {
        let mut p = 0;
        while p < self.buf.len() {
            let (ms, me, es, next) = read_entry(&self.buf, p);
            if cmp_entry(es, &self.buf[ms..me], s, m) == Ordering::Greater {
                break;
            }
            p = next;
        }
        self.insert_at(p, m, s);
    }

    /// Appends an entry known to sort after every other one.
    fn push_back(&mut self, m: &[u8], s: f64) {
        let at = self.buf.len();
        self.insert_at(at, m, s);
    }

    /// Removes `n` entries occupying bytes `from..to`.
    fn remove_bytes(&mut self, from: usize, to: usize, n: usize) {
        self.buf.drain(from..to);
        self.len -= n as u32;
        if self.buf.capacity() - self.buf.len() > 16.max(self.buf.len() / 8) {
            self.buf.shrink_to_fit();
        }
    }

    fn remove_at(&mut self, p: usize) {
        let (_, _, _, next) = read_entry(&self.buf, p);
        self.remove_bytes(p, next, 1);
    }
}

// ---------------------------------------------------------------------------
// skiplist encoding
// ---------------------------------------------------------------------------

const MAX_LEVEL: usize = 32;
const NIL: u32 = u32::MAX;
const HEAD: u32 = u32::MAX - 1;
/// `back` of a free arena slot.
const FREE: u32 = u32::MAX - 2;
/// A node id is its height (minus one, top 5 bits) and its slot in the tier
/// of nodes of that height.
const SLOT_BITS: u32 = 27;
const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;
/// Slots per tier (the ids above are NIL, HEAD).
const MAX_SLOTS: usize = SLOT_MASK as usize - 2;

#[inline]
fn make_id(height: usize, slot: usize) -> u32 {
    (((height - 1) as u32) << SLOT_BITS) | slot as u32
}

#[inline]
fn id_height(x: u32) -> usize {
    (x >> SLOT_BITS) as usize + 1
}

#[inline]
fn id_slot(x: u32) -> usize {
    (x & SLOT_MASK) as usize
}

/// A forward link, its span (level 0's span is 1 when the link exists,
/// which Redis stores and we derive) and the score of the node it points
/// to. With the score at hand a search compares without loading the next
/// node (only ties need its member), and a node's links are contiguous, so
/// a search step costs one cache miss, as in Redis.
#[derive(Clone, Copy, Debug)]
struct Link {
    fwd: u32,
    span: u32,
    score: f64,
}

const EMPTY_LINK: Link = Link {
    fwd: NIL,
    span: 0,
    score: 0.0,
};

#[derive(Clone)]
struct Node {
    member: Sds,
    score: f64,
    /// The previous node on level 0 (NIL for the first), or FREE.
    back: u32,
}

impl Node {
    fn free() -> Node {
        Node {
            member: Sds::new(),
            score: 0.0,
            back: FREE,
        }
    }

    fn is_free(&self) -> bool {
        self.back == FREE
    }
}

/// The nodes of one height: their data, and their links (`height` per
/// node, level 0 first).
#[derive(Clone, Default)]
struct Tier {
    nodes: Vec<Node>,
    links: Vec<Link>,
    free: Vec<u32>,
}

/// The skiplist encoding: Redis's zskiplist in index arenas (one per node
/// height, so every node's links are inline and no node has a pointer),
/// plus a member → node hash index.
#[derive(Clone)]
pub struct SkipList {
    tiers: Vec<Tier>,
    len: usize,
    head: [Link; MAX_LEVEL],
    tail: u32,
    level: usize,
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
    rng: u64,
    #[cfg(test)]
    compactions: usize,
}

impl Default for SkipList {
    fn default() -> Self {
        SkipList::new()
    }
}

impl SkipList {
    pub fn new() -> Self {
        SkipList {
            tiers: Vec::new(),
            len: 0,
            head: [EMPTY_LINK; MAX_LEVEL],
            tail: NIL,
            level: 1,
            index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            rng: rand::random::<u64>() | 1,
            #[cfg(test)]
            compactions: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn node(&self, x: u32) -> &Node {
        &self.tiers[id_height(x) - 1].nodes[id_slot(x)]
    }

    #[inline]
    fn node_mut(&mut self, x: u32) -> &mut Node {
        &mut self.tiers[id_height(x) - 1].nodes[id_slot(x)]
    }

    #[inline]
    fn link(&self, x: u32, i: usize) -> &Link {
        if x == HEAD {
            &self.head[i]
        } else {
            let h = id_height(x);
            &self.tiers[h - 1].links[id_slot(x) * h + i]
        }
    }

    #[inline]
    fn link_mut(&mut self, x: u32, i: usize) -> &mut Link {
        if x == HEAD {
            &mut self.head[i]
        } else {
            let h = id_height(x);
            &mut self.tiers[h - 1].links[id_slot(x) * h + i]
        }
    }

    #[inline]
    fn fwd(&self, x: u32, i: usize) -> u32 {
        self.link(x, i).fwd
    }

    /// The next node on level 0.
    #[inline]
    fn next(&self, x: u32) -> u32 {
        self.link(x, 0).fwd
    }

    /// Score of the node `fwd(x, i)` (meaningless when that is NIL).
    #[inline]
    fn fwd_score(&self, x: u32, i: usize) -> f64 {
        self.link(x, i).score
    }

    /// Points level `i` of `x` at `v`, whose score is `score`.
    #[inline]
    fn set_fwd(&mut self, x: u32, i: usize, v: u32, score: f64) {
        let l = self.link_mut(x, i);
        l.fwd = v;
        l.score = score;
    }

    #[inline]
    fn span(&self, x: u32, i: usize) -> usize {
        if i == 0 {
            return usize::from(self.fwd(x, 0) != NIL);
        }
        self.link(x, i).span as usize
    }

    #[inline]
    fn set_span(&mut self, x: u32, i: usize, v: usize) {
        if i > 0 {
            self.link_mut(x, i).span = v as u32;
        }
    }

    /// The node after `x` on level `i` if it sorts before (score, m).
    #[inline]
    fn step_lt(&self, x: u32, i: usize, score: f64, m: &[u8]) -> Option<u32> {
        let l = self.link(x, i);
        if l.fwd == NIL {
            return None;
        }
        (l.score < score || (l.score == score && self.node(l.fwd).member.as_bytes() < m))
            .then_some(l.fwd)
    }

    /// The node after `x` on level `i` if it sorts before or at (score, m).
    #[inline]
    fn step_le(&self, x: u32, i: usize, score: f64, m: &[u8]) -> Option<u32> {
        let l = self.link(x, i);
        if l.fwd == NIL {
            return None;
        }
        (l.score < score || (l.score == score && self.node(l.fwd).member.as_bytes() <= m))
            .then_some(l.fwd)
    }

    #[inline]
    fn hash(&self, m: &[u8]) -> u64 {
        self.hasher.hash_one(m)
    }

    fn find(&self, m: &[u8]) -> Option<u32> {
        let h = self.hash(m);
        self.index
            .find(h, |&i| self.node(i).member.as_bytes() == m)
            .copied()
    }

    fn index_insert(&mut self, id: u32) {
        let h = self.hash(self.node(id).member.as_bytes());
        let tiers = &self.tiers;
        let hasher = &self.hasher;
        self.index.insert_unique(h, id, |&i| {
            hasher.hash_one(tiers[id_height(i) - 1].nodes[id_slot(i)].member.as_bytes())
        });
    }

    fn index_remove(&mut self, id: u32) {
        let h = self.hash(self.node(id).member.as_bytes());
        if let Ok(e) = self.index.find_entry(h, |&i| i == id) {
            e.remove();
        }
    }

    fn next_rand(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32
    }

    /// Redis's `zslRandomLevel` (p = 1/4); a full tier (2^27 nodes of one
    /// height) pushes a node one level up.
    fn random_level(&mut self) -> usize {
        let mut level = 1;
        while level < MAX_LEVEL && (self.next_rand() & 0xFFFF) < 0x4000 {
            level += 1;
        }
        while level < MAX_LEVEL
            && self
                .tiers
                .get(level - 1)
                .is_some_and(|t| t.free.is_empty() && t.nodes.len() >= MAX_SLOTS)
        {
            level += 1;
        }
        level
    }

    /// Takes a slot of the tier of `height` for `node` (links empty).
    fn alloc(&mut self, height: usize, node: Node) -> u32 {
        if self.tiers.len() < height {
            self.tiers.resize_with(height, Tier::default);
        }
        let t = &mut self.tiers[height - 1];
        let slot = match t.free.pop() {
            Some(slot) => {
                let slot = slot as usize;
                t.nodes[slot] = node;
                t.links[slot * height..(slot + 1) * height].fill(EMPTY_LINK);
                slot
            }
            None => {
                t.nodes.push(node);
                t.links.extend(std::iter::repeat_n(EMPTY_LINK, height));
                t.nodes.len() - 1
            }
        };
        self.len += 1;
        make_id(height, slot)
    }

    /// `zslInsert` of a member known to be absent; returns its id.
    fn insert(&mut self, member: Sds, score: f64) -> u32 {
        let mut update = [HEAD; MAX_LEVEL];
        let mut rank = [0usize; MAX_LEVEL];
        let mut x = HEAD;
        for i in (0..self.level).rev() {
            rank[i] = if i == self.level - 1 { 0 } else { rank[i + 1] };
            while let Some(f) = self.step_lt(x, i, score, member.as_bytes()) {
                rank[i] += self.span(x, i);
                x = f;
            }
            update[i] = x;
        }
        let level = self.random_level();
        if level > self.level {
            for i in self.level..level {
                rank[i] = 0;
                update[i] = HEAD;
                self.head[i].span = self.len as u32;
            }
            self.level = level;
        }
        let back = if update[0] == HEAD { NIL } else { update[0] };
        let id = self.alloc(
            level,
            Node {
                member,
                score,
                back,
            },
        );
        for i in 0..level {
            let (uf, ufs) = (self.fwd(update[i], i), self.fwd_score(update[i], i));
            self.set_fwd(id, i, uf, ufs);
            self.set_fwd(update[i], i, id, score);
            if i > 0 {
                let us = self.span(update[i], i);
                self.set_span(id, i, us - (rank[0] - rank[i]));
                self.set_span(update[i], i, rank[0] - rank[i] + 1);
            }
        }
        for (i, &u) in update.iter().enumerate().take(self.level).skip(level) {
            let s = self.span(u, i);
            self.set_span(u, i, s + 1);
        }
        let next = self.next(id);
        if next != NIL {
            self.node_mut(next).back = id;
        } else {
            self.tail = id;
        }
        self.index_insert(id);
        id
    }

    /// The last node before (score, m) on every level.
    fn predecessors(&self, score: f64, m: &[u8]) -> [u32; MAX_LEVEL] {
        let mut update = [HEAD; MAX_LEVEL];
        let mut x = HEAD;
        for i in (0..self.level).rev() {
            while let Some(f) = self.step_lt(x, i, score, m) {
                x = f;
            }
            update[i] = x;
        }
        update
    }

    /// The node after `x` on level `i` if it is below the range's minimum.
    #[inline]
    fn step_below_min(&self, x: u32, i: usize, b: Bound<'_>) -> Option<u32> {
        let f = self.fwd(x, i);
        (f != NIL && !b.gte_min(self, self.fwd_score(x, i), f)).then_some(f)
    }

    /// The node after `x` on level `i` if it is within the range's maximum.
    #[inline]
    fn step_within_max(&self, x: u32, i: usize, b: Bound<'_>) -> Option<u32> {
        let f = self.fwd(x, i);
        (f != NIL && b.lte_max(self, self.fwd_score(x, i), f)).then_some(f)
    }

    /// Predecessors of the first node not below the range's minimum.
    fn predecessors_before_min(&self, b: Bound<'_>) -> [u32; MAX_LEVEL] {
        let mut update = [HEAD; MAX_LEVEL];
        let mut x = HEAD;
        for i in (0..self.level).rev() {
            while let Some(f) = self.step_below_min(x, i, b) {
                x = f;
            }
            update[i] = x;
        }
        update
    }

    /// Redis's quick "is anything in range" test (`zslIsInRange`), minus
    /// the range's own emptiness, which callers check first.
    fn may_hold(&self, b: Bound<'_>) -> bool {
        let first = self.head[0].fwd;
        self.tail != NIL
            && b.gte_min(self, self.node(self.tail).score, self.tail)
            && b.lte_max(self, self.node(first).score, first)
    }

    /// `zslDeleteNode`: unlinks `x` given its predecessors. The slot stays
    /// taken (see `release`).
    fn unlink(&mut self, x: u32, update: &[u32; MAX_LEVEL]) {
        for (i, &u) in update.iter().enumerate().take(self.level) {
            if self.fwd(u, i) == x {
                if i > 0 {
                    let s = self.span(u, i) + self.span(x, i) - 1;
                    self.set_span(u, i, s);
                }
                let (f, fs) = (self.fwd(x, i), self.fwd_score(x, i));
                self.set_fwd(u, i, f, fs);
            } else if i > 0 {
                let s = self.span(u, i) - 1;
                self.set_span(u, i, s);
            }
        }
        let (back, next) = (self.node(x).back, self.next(x));
        if next != NIL {
            self.node_mut(next).back = back;
        } else {
            self.tail = back;
        }
        while self.level > 1 && self.head[self.level - 1].fwd == NIL {
            self.level -= 1;
        }
    }

    /// Frees the slot of an unlinked, unindexed node; returns the node.
    fn release(&mut self, x: u32) -> Node {
        let t = &mut self.tiers[id_height(x) - 1];
        let n = std::mem::replace(&mut t.nodes[id_slot(x)], Node::free());
        t.free.push(id_slot(x) as u32);
        self.len -= 1;
        n
    }

    /// Removes a linked node; returns it.
    fn remove_idx(&mut self, x: u32) -> Node {
        let update = {
            let n = self.node(x);
            self.predecessors(n.score, n.member.as_bytes())
        };
        self.unlink(x, &update);
        self.index_remove(x);
        let n = self.release(x);
        self.maybe_compact();
        n
    }

    /// Compacts a tier once most of its slots are free.
    fn maybe_compact(&mut self) {
        if self.len == 0 {
            self.tiers = Vec::new();
            self.maybe_shrink();
            return;
        }
        for h in 1..=self.tiers.len() {
            let t = &self.tiers[h - 1];
            if t.free.len() > 16 && t.free.len() > t.nodes.len() - t.free.len() {
                self.compact(h);
            }
        }
    }

    /// Drops the free slots of the tier of `height`, keeping its nodes in
    /// slot order (so a ZSCAN in progress, which walks slots downwards,
    /// still sees every node that stays), then renumbers the links to them.
    fn compact(&mut self, height: usize) {
        #[cfg(test)]
        {
            self.compactions += 1;
        }
        let t = &mut self.tiers[height - 1];
        let n = t.nodes.len();
        let mut map = vec![0u32; n];
        for &s in &t.free {
            map[s as usize] = NIL;
        }
        t.free = Vec::new();
        let mut j = 0u32;
        for m in map.iter_mut() {
            if *m != NIL {
                *m = j;
                j += 1;
            }
        }
        let mut k = 0;
        t.nodes.retain(|_| {
            let keep = map[k] != NIL;
            k += 1;
            keep
        });
        let old_links = std::mem::take(&mut t.links);
        t.links = Vec::with_capacity(j as usize * height);
        for (slot, chunk) in old_links.chunks(height).enumerate() {
            if map[slot] != NIL {
                t.links.extend_from_slice(chunk);
            }
        }
        let remap = |x: u32| {
            if x >= FREE || id_height(x) != height {
                x
            } else {
                make_id(height, map[id_slot(x)] as usize)
            }
        };
        for t in &mut self.tiers {
            for node in &mut t.nodes {
                node.back = remap(node.back);
            }
            for l in &mut t.links {
                l.fwd = remap(l.fwd);
            }
        }
        for l in &mut self.head {
            l.fwd = remap(l.fwd);
        }
        self.tail = remap(self.tail);
        for id in self.index.iter_mut() {
            *id = remap(*id);
        }
        self.maybe_shrink();
    }

    fn maybe_shrink(&mut self) {
        for t in &mut self.tiers {
            if t.nodes.capacity() > 2 * t.nodes.len() + 16 {
                t.nodes.shrink_to_fit();
                t.links.shrink_to_fit();
            }
            if t.free.capacity() > 2 * t.free.len() + 16 {
                t.free.shrink_to_fit();
            }
        }
        let len = self.len;
        if self.index.capacity() > 4 * len + 16 {
            let tiers = &self.tiers;
            let hasher = &self.hasher;
            self.index.shrink_to(len, |&i| {
                hasher.hash_one(tiers[id_height(i) - 1].nodes[id_slot(i)].member.as_bytes())
            });
        }
    }

    /// `zslUpdateScore`: in place when the order allows, else reinserted.
    fn update_score(&mut self, x: u32, score: f64) {
        let back = self.node(x).back;
        let (next, next_score) = (self.next(x), self.fwd_score(x, 0));
        if (back == NIL || self.node(back).score < score) && (next == NIL || next_score > score) {
            // The links into `x` carry its score: update them.
            let update = {
                let n = self.node(x);
                self.predecessors(n.score, n.member.as_bytes())
            };
            for (i, &u) in update.iter().enumerate().take(id_height(x)) {
                self.set_fwd(u, i, x, score);
            }
            self.node_mut(x).score = score;
            return;
        }
        let n = self.remove_idx(x);
        self.insert(n.member, score);
    }

    /// 1-based rank of the node `id` (`zslGetRank`).
    fn rank_of(&self, id: u32) -> usize {
        let n = self.node(id);
        let (score, m) = (n.score, n.member.as_bytes());
        let mut x = HEAD;
        let mut rank = 0;
        for i in (0..self.level).rev() {
            while let Some(f) = self.step_le(x, i, score, m) {
                rank += self.span(x, i);
                x = f;
            }
            if x == id {
                return rank;
            }
        }
        0
    }

    /// The node of 1-based rank `rank` (`zslGetElementByRank`), or NIL.
    fn by_rank(&self, rank: usize) -> u32 {
        let mut x = HEAD;
        let mut t = 0;
        for i in (0..self.level).rev() {
            loop {
                let f = self.fwd(x, i);
                if f != NIL && t + self.span(x, i) <= rank {
                    t += self.span(x, i);
                    x = f;
                } else {
                    break;
                }
            }
            if t == rank {
                return if x == HEAD { NIL } else { x };
            }
        }
        NIL
    }

    /// `zslFirstInRange` / `zslFirstInLexRange` (the caller checked that
    /// the range itself is not empty), with the node's 1-based rank.
    fn first_in(&self, b: Bound<'_>) -> (u32, usize) {
        if !self.may_hold(b) {
            return (NIL, 0);
        }
        let mut x = HEAD;
        let mut rank = 0;
        for i in (0..self.level).rev() {
            while let Some(f) = self.step_below_min(x, i, b) {
                rank += self.span(x, i);
                x = f;
            }
        }
        let f = self.fwd(x, 0);
        if f == NIL || !b.lte_max(self, self.fwd_score(x, 0), f) {
            return (NIL, 0);
        }
        (f, rank + 1)
    }

    /// `zslLastInRange` / `zslLastInLexRange`, with the node's rank.
    fn last_in(&self, b: Bound<'_>) -> (u32, usize) {
        if !self.may_hold(b) {
            return (NIL, 0);
        }
        let mut x = HEAD;
        let mut rank = 0;
        for i in (0..self.level).rev() {
            while let Some(f) = self.step_within_max(x, i, b) {
                rank += self.span(x, i);
                x = f;
            }
        }
        if x == HEAD || !b.gte_min(self, self.node(x).score, x) {
            return (NIL, 0);
        }
        (x, rank)
    }

    /// Unlinks the run of nodes after `update[0]` while `more` holds, then
    /// frees their slots; returns how many.
    fn delete_run(
        &mut self,
        update: [u32; MAX_LEVEL],
        mut more: impl FnMut(&Node) -> bool,
    ) -> usize {
        let mut n = 0;
        let mut x = self.fwd(update[0], 0);
        while x != NIL && more(self.node(x)) {
            let next = self.next(x);
            self.unlink(x, &update);
            self.index_remove(x);
            self.release(x);
            n += 1;
            x = next;
        }
        self.maybe_compact();
        n
    }

    /// `zslDeleteRangeByRank` (1-based, inclusive).
    fn delete_rank_range(&mut self, start: usize, end: usize) -> usize {
        let mut update = [HEAD; MAX_LEVEL];
        let mut x = HEAD;
        let mut traversed = 0;
        for i in (0..self.level).rev() {
            loop {
                let f = self.fwd(x, i);
                if f != NIL && traversed + self.span(x, i) < start {
                    traversed += self.span(x, i);
                    x = f;
                } else {
                    break;
                }
            }
            update[i] = x;
        }
        let mut rank = traversed + 1;
        self.delete_run(update, |_| {
            let ok = rank <= end;
            rank += 1;
            ok
        })
    }

    /// Walks from `start` (of 1-based rank `rank`), skipping `offset`
    /// nodes, while `cont` holds, at most `limit` nodes (negative: no
    /// limit), as Redis's range loops do.
    fn collect_from(
        &self,
        (start, rank): (u32, usize),
        rev: bool,
        offset: i64,
        limit: i64,
        cont: impl Fn(&Node) -> bool,
    ) -> Vec<(&[u8], f64)> {
        let mut out = Vec::new();
        if start == NIL || offset < 0 {
            return out;
        }
        let len = self.len;
        let off = offset as u64;
        let mut x = if off == 0 {
            start
        } else if rev {
            if off >= rank as u64 {
                NIL
            } else {
                self.by_rank(rank - off as usize)
            }
        } else if rank as u64 + off > len as u64 {
            NIL
        } else {
            self.by_rank(rank + off as usize)
        };
        let mut left = if limit < 0 { u64::MAX } else { limit as u64 };
        while x != NIL && left > 0 {
            let n = self.node(x);
            if !cont(n) {
                break;
            }
            out.push((n.member.as_bytes(), n.score));
            left -= 1;
            x = if rev { n.back } else { self.next(x) };
        }
        out
    }

    /// Redis's ZCOUNT/ZLEXCOUNT arithmetic on the ranks of the first and
    /// last nodes in range.
    fn count_between(
        &self,
        (first, first_rank): (u32, usize),
        (last, last_rank): (u32, usize),
    ) -> usize {
        if first == NIL {
            return 0;
        }
        let len = self.len;
        let mut count = len - (first_rank - 1);
        if last != NIL {
            count -= len - last_rank;
        }
        count
    }

    fn iter(&self) -> SkipIter<'_> {
        SkipIter {
            list: self,
            x: self.head[0].fwd,
        }
    }

    /// A random element: a random arena slot (tiers stay mostly full), or a
    /// random rank when several tries hit free slots.
    fn random(&self, r: u64) -> Option<(&[u8], f64)> {
        if self.len == 0 {
            return None;
        }
        let slots: u64 = self.tiers.iter().map(|t| t.nodes.len() as u64).sum();
        let mut x = r;
        for _ in 0..16 {
            let mut i = x % slots;
            for t in &self.tiers {
                if i < t.nodes.len() as u64 {
                    let n = &t.nodes[i as usize];
                    if !n.is_free() {
                        return Some((n.member.as_bytes(), n.score));
                    }
                    break;
                }
                i -= t.nodes.len() as u64;
            }
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407)
                >> 1;
        }
        let n = self.node(self.by_rank((r % self.len as u64) as usize + 1));
        Some((n.member.as_bytes(), n.score))
    }

    /// One ZSCAN step over the arenas: tier by tier (heights 1, 2, ...),
    /// slots downwards within a tier. The cursor is `tier << 32 | slot + 1`
    /// of the next slot to visit; 0 starts, and is returned at the end.
    /// Nodes never move to a higher slot, so every node present for the
    /// whole scan is visited at least once.
    fn scan<'a>(&'a self, cursor: u64, count: usize, mut f: impl FnMut(&'a [u8], f64)) -> u64 {
        let (mut tier, mut upper) = if cursor == 0 {
            (0usize, None)
        } else {
            ((cursor >> 32) as usize, Some(cursor & 0xFFFF_FFFF))
        };
        let (mut n, mut visited) = (0, 0);
        while tier < self.tiers.len() {
            let nodes = &self.tiers[tier].nodes;
            let mut up = upper.unwrap_or(nodes.len() as u64).min(nodes.len() as u64);
            while up > 0 {
                if n >= count || visited >= count.saturating_mul(10) {
                    return ((tier as u64) << 32) | up;
                }
                up -= 1;
                visited += 1;
                let node = &nodes[up as usize];
                if !node.is_free() {
                    f(node.member.as_bytes(), node.score);
                    n += 1;
                }
            }
            tier += 1;
            upper = None;
        }
        0
    }

    fn heap_size(&self) -> usize {
        self.tiers
            .iter()
            .map(|t| {
                t.nodes.capacity() * std::mem::size_of::<Node>()
                    + t.links.capacity() * std::mem::size_of::<Link>()
                    + t.free.capacity() * std::mem::size_of::<u32>()
                    + t.nodes.iter().map(|n| n.member.heap_size()).sum::<usize>()
            })
            .sum::<usize>()
            + self.tiers.capacity() * std::mem::size_of::<Tier>()
            + self.index.capacity() * (std::mem::size_of::<u32>() + 1)
    }

    /// Checks every structural invariant (tests).
    #[cfg(test)]
    fn check(&self) {
        use std::collections::HashMap;
        let len = self.len;
        let mut live = 0;
        for (h, t) in self.tiers.iter().enumerate() {
            let free = t.nodes.iter().filter(|n| n.is_free()).count();
            assert_eq!(free, t.free.len(), "free slots vs free list, tier {h}");
            assert_eq!(t.links.len(), t.nodes.len() * (h + 1), "links of tier {h}");
            for &s in &t.free {
                assert!(t.nodes[s as usize].is_free());
            }
            live += t.nodes.len() - free;
        }
        assert_eq!(live, len, "live nodes vs len");
        // Level 0: order, back links, tail, ranks.
        let mut order = Vec::with_capacity(len);
        let mut x = self.head[0].fwd;
        let mut prev = NIL;
        while x != NIL {
            let n = self.node(x);
            assert_eq!(n.back, prev, "back link of {x}");
            if prev != NIL {
                let p = self.node(prev);
                assert_eq!(
                    cmp_entry(p.score, p.member.as_bytes(), n.score, n.member.as_bytes()),
                    Ordering::Less
                );
            }
            order.push(x);
            prev = x;
            x = self.next(x);
        }
        assert_eq!(order.len(), len, "list length vs arena");
        assert_eq!(self.tail, prev);
        let rank_of: HashMap<u32, usize> =
            order.iter().enumerate().map(|(r, &x)| (x, r + 1)).collect();
        // Higher levels: spans equal rank differences.
        for i in 1..self.level {
            let mut x = HEAD;
            let mut r = 0;
            loop {
                let f = self.fwd(x, i);
                let s = self.span(x, i);
                if f == NIL {
                    assert_eq!(r + s, len, "span to end at level {i}");
                    break;
                }
                assert!(
                    id_height(f) > i,
                    "node of height {} on level {i}",
                    id_height(f)
                );
                assert_eq!(r + s, rank_of[&f], "span at level {i}");
                r = rank_of[&f];
                x = f;
            }
        }
        assert!(self.level == 1 || self.head[self.level - 1].fwd != NIL);
        // Every link carries the score of the node it points to.
        for x in std::iter::once(HEAD).chain(order.iter().copied()) {
            let levels = if x == HEAD { self.level } else { id_height(x) };
            for i in 0..levels {
                let f = self.fwd(x, i);
                if f != NIL {
                    assert_eq!(
                        self.fwd_score(x, i).to_bits(),
                        self.node(f).score.to_bits(),
                        "link score at level {i}"
                    );
                }
            }
        }
        // Index: every node once.
        assert_eq!(self.index.len(), len);
        for &x in &order {
            assert_eq!(self.find(self.node(x).member.as_bytes()), Some(x));
            assert!(id_height(x) <= self.level);
        }
    }
}

/// A score or lex range as the skiplist searches it: score bounds are
/// tested on the scores links carry, lex bounds on the members.
#[derive(Clone, Copy)]
enum Bound<'r> {
    Score(&'r ScoreRange),
    Lex(&'r LexRange),
}

impl Bound<'_> {
    /// Node `x`, whose score is `score`, is not below the minimum.
    #[inline]
    fn gte_min(self, s: &SkipList, score: f64, x: u32) -> bool {
        match self {
            Bound::Score(r) => r.gte_min(score),
            Bound::Lex(r) => r.gte_min(s.node(x).member.as_bytes()),
        }
    }

    #[inline]
    fn lte_max(self, s: &SkipList, score: f64, x: u32) -> bool {
        match self {
            Bound::Score(r) => r.lte_max(score),
            Bound::Lex(r) => r.lte_max(s.node(x).member.as_bytes()),
        }
    }
}

struct SkipIter<'a> {
    list: &'a SkipList,
    x: u32,
}

impl<'a> Iterator for SkipIter<'a> {
    type Item = (&'a [u8], f64);

    fn next(&mut self) -> Option<(&'a [u8], f64)> {
        if self.x == NIL {
            return None;
        }
        let n = self.list.node(self.x);
        let out = (n.member.as_bytes(), n.score);
        self.x = self.list.next(self.x);
        Some(out)
    }
}

impl fmt::Debug for SkipList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl fmt::Debug for Pack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

// ---------------------------------------------------------------------------
// Redis's listpack range algorithms over a materialized, ordered slice
// ---------------------------------------------------------------------------

type Item<'a> = (&'a [u8], f64);

/// `zzlFirstInRange`-style start: index of the first element satisfying
/// `gte_min` (forward) or the last satisfying `lte_max` (reverse), if it is
/// inside the range, after Redis's quick "is in range" test.
fn linear_start(
    items: &[Item<'_>],
    rev: bool,
    gte_min: &impl Fn(&Item<'_>) -> bool,
    lte_max: &impl Fn(&Item<'_>) -> bool,
) -> Option<usize> {
    let (first, last) = (items.first()?, items.last()?);
    if !gte_min(last) || !lte_max(first) {
        return None;
    }
    if rev {
        let i = items.iter().rposition(lte_max)?;
        gte_min(&items[i]).then_some(i)
    } else {
        let i = items.iter().position(gte_min)?;
        lte_max(&items[i]).then_some(i)
    }
}

fn linear_range<'a>(
    items: &[Item<'a>],
    rev: bool,
    offset: i64,
    limit: i64,
    gte_min: impl Fn(&Item<'_>) -> bool,
    lte_max: impl Fn(&Item<'_>) -> bool,
) -> Vec<Item<'a>> {
    let mut out = Vec::new();
    let Some(start) = linear_start(items, rev, &gte_min, &lte_max) else {
        return out;
    };
    if offset < 0 {
        return out;
    }
    let off = offset as u64;
    let mut left = if limit < 0 { u64::MAX } else { limit as u64 };
    if rev {
        if off > start as u64 {
            return out;
        }
        let mut i = start - off as usize;
        while left > 0 && gte_min(&items[i]) {
            out.push(items[i]);
            left -= 1;
            if i == 0 {
                break;
            }
            i -= 1;
        }
    } else {
        if start as u64 + off >= items.len() as u64 {
            return out;
        }
        let mut i = start + off as usize;
        while i < items.len() && left > 0 && lte_max(&items[i]) {
            out.push(items[i]);
            left -= 1;
            i += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------
// ZSet
// ---------------------------------------------------------------------------

/// A sorted set.
#[derive(Clone)]
pub enum ZSet {
    Pack(Pack),
    Skip(Box<SkipList>),
}

impl fmt::Debug for ZSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ZSet::Pack(p) => write!(f, "ZSet::Pack({p:?})"),
            ZSet::Skip(s) => write!(f, "ZSet::Skip({s:?})"),
        }
    }
}

impl Default for ZSet {
    fn default() -> Self {
        ZSet::Pack(Pack::default())
    }
}

/// Ascending iterator over a [`ZSet`].
pub enum Iter<'a> {
    Pack(PackIter<'a>),
    Skip(SkipIterPub<'a>),
}

/// Ascending iterator over the skiplist encoding.
pub struct SkipIterPub<'a>(SkipIter<'a>);

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a [u8], f64);

    #[inline]
    fn next(&mut self) -> Option<(&'a [u8], f64)> {
        match self {
            Iter::Pack(p) => p.next(),
            Iter::Skip(s) => s.0.next(),
        }
    }
}

impl ZSet {
    /// An empty set for ZADD's first member (`zaddGenericCommand`): a
    /// skiplist right away when listpacks are disabled or the first member
    /// is too long.
    pub fn new_for(first_member_len: usize, limits: &Limits) -> ZSet {
        if limits.max_entries == 0 || first_member_len > limits.max_value {
            ZSet::Skip(Box::default())
        } else {
            ZSet::default()
        }
    }

    /// A set holding `entries` (members unique), encoded as Redis encodes a
    /// computed result (ZUNIONSTORE, ZRANGESTORE...).
    pub fn from_entries(mut entries: Vec<(Vec<u8>, f64)>, limits: &Limits) -> ZSet {
        entries.sort_by(|a, b| cmp_entry(a.1, &a.0, b.1, &b.0));
        let max_len = entries.iter().map(|e| e.0.len()).max().unwrap_or(0);
        if limits.fits(entries.len(), max_len) {
            let mut p = Pack::default();
            let total: usize = entries.iter().map(|(m, s)| entry_len(m, *s)).sum();
            p.buf.reserve_exact(total);
            for (m, s) in &entries {
                p.push_back(m, *s);
            }
            ZSet::Pack(p)
        } else {
            let mut s = SkipList::new();
            for (m, sc) in entries {
                s.insert(Sds::from_vec(m), sc);
            }
            ZSet::Skip(Box::new(s))
        }
    }

    pub fn len(&self) -> usize {
        match self {
            ZSet::Pack(p) => p.len(),
            ZSet::Skip(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn encoding(&self) -> &'static str {
        match self {
            ZSet::Pack(_) => "listpack",
            ZSet::Skip(_) => "skiplist",
        }
    }

    pub fn iter(&self) -> Iter<'_> {
        match self {
            ZSet::Pack(p) => Iter::Pack(p.iter()),
            ZSet::Skip(s) => Iter::Skip(SkipIterPub(s.iter())),
        }
    }

    /// (member, score) in order.
    pub fn entries(&self) -> Vec<(&[u8], f64)> {
        self.iter().collect()
    }

    /// Converts to the skiplist encoding (SORT does this, as in Redis).
    pub fn convert_to_skiplist(&mut self) {
        if let ZSet::Pack(p) = self {
            let mut s = SkipList::new();
            for (m, sc) in p.iter() {
                s.insert(Sds::from_slice(m), sc);
            }
            *self = ZSet::Skip(Box::new(s));
        }
    }

    pub fn score(&self, m: &[u8]) -> Option<f64> {
        match self {
            ZSet::Pack(p) => p.find(m).map(|(_, s)| s),
            ZSet::Skip(s) => s.find(m).map(|x| s.node(x).score),
        }
    }

    /// Redis's `zsetAdd`: adds or updates `m` per the ZADD_* `flags`,
    /// converting to the skiplist encoding past the listpack limits.
    pub fn add(&mut self, m: &[u8], score: f64, flags: u8, limits: &Limits) -> AddResult {
        let incr = flags & ZADD_INCR != 0;
        let nx = flags & ZADD_NX != 0;
        let xx = flags & ZADD_XX != 0;
        let gt = flags & ZADD_GT != 0;
        let lt = flags & ZADD_LT != 0;
        if score.is_nan() {
            return AddResult::Nan;
        }
        let mut score = score;
        let existing_update = |cur: f64, score: &mut f64| -> Option<AddResult> {
            if nx {
                return Some(AddResult::Nop);
            }
            if incr {
                *score += cur;
                if score.is_nan() {
                    return Some(AddResult::Nan);
                }
            }
            if (lt && *score >= cur) || (gt && *score <= cur) {
                return Some(AddResult::Nop);
            }
            None
        };
        if let ZSet::Pack(p) = self {
            if let Some((pos, cur)) = p.find(m) {
                if let Some(r) = existing_update(cur, &mut score) {
                    return r;
                }
                if score != cur {
                    p.remove_at(pos);
                    p.insert(m, score);
                    return AddResult::Updated(score);
                }
                return AddResult::Unchanged(score);
            }
            if xx {
                return AddResult::Nop;
            }
            if p.len() < limits.max_entries && m.len() <= limits.max_value {
                p.insert(m, score);
                return AddResult::Added(score);
            }
            self.convert_to_skiplist();
        }
        let ZSet::Skip(s) = self else {
            return AddResult::Nop;
        };
        match s.find(m) {
            Some(x) => {
                let cur = s.node(x).score;
                if let Some(r) = existing_update(cur, &mut score) {
                    return r;
                }
                if score != cur {
                    s.update_score(x, score);
                    return AddResult::Updated(score);
                }
                AddResult::Unchanged(score)
            }
            None if xx => AddResult::Nop,
            None => {
                s.insert(Sds::from_slice(m), score);
                AddResult::Added(score)
            }
        }
    }

    /// Removes `m`; true if it was there.
    pub fn remove(&mut self, m: &[u8]) -> bool {
        match self {
            ZSet::Pack(p) => match p.find(m) {
                Some((pos, _)) => {
                    p.remove_at(pos);
                    true
                }
                None => false,
            },
            ZSet::Skip(s) => match s.find(m) {
                Some(x) => {
                    s.remove_idx(x);
                    true
                }
                None => false,
            },
        }
    }

    /// 0-based rank of `m` (from the top with `rev`).
    pub fn rank(&self, m: &[u8], rev: bool) -> Option<usize> {
        let len = self.len();
        let rank1 = match self {
            ZSet::Pack(p) => p.iter().position(|(x, _)| x == m)? + 1,
            ZSet::Skip(s) => {
                let x = s.find(m)?;
                s.rank_of(x)
            }
        };
        if rank1 == 0 {
            return None;
        }
        Some(if rev { len - rank1 } else { rank1 - 1 })
    }

    /// Elements of 0-based ranks `start..=end` (valid, `start <= end <
    /// len`), in that order, or counted from the top with `rev`.
    pub fn range_by_rank(&self, start: usize, end: usize, rev: bool) -> Vec<(&[u8], f64)> {
        let len = self.len();
        if start > end || end >= len {
            return Vec::new();
        }
        let n = end - start + 1;
        match self {
            ZSet::Pack(p) => {
                if rev {
                    let all = p.entries_at();
                    (start..=end)
                        .map(|r| {
                            let e = all[len - 1 - r];
                            (e.1, e.2)
                        })
                        .collect()
                } else {
                    p.iter().skip(start).take(n).collect()
                }
            }
            ZSet::Skip(s) => {
                let mut out = Vec::with_capacity(n);
                let mut x = if rev {
                    s.by_rank(len - start)
                } else {
                    s.by_rank(start + 1)
                };
                while x != NIL && out.len() < n {
                    let node = s.node(x);
                    out.push((node.member.as_bytes(), node.score));
                    x = if rev { node.back } else { s.next(x) };
                }
                out
            }
        }
    }

    /// ZRANGEBYSCORE semantics: from the first (last with `rev`) element in
    /// `r`, skip `offset`, then up to `limit` (negative: all) elements.
    pub fn range_by_score(
        &self,
        r: &ScoreRange,
        rev: bool,
        offset: i64,
        limit: i64,
    ) -> Vec<(&[u8], f64)> {
        if (offset > 0 && offset as u64 >= self.len() as u64) || r.is_empty() {
            return Vec::new();
        }
        match self {
            ZSet::Pack(p) => {
                let items: Vec<Item<'_>> = p.iter().collect();
                linear_range(
                    &items,
                    rev,
                    offset,
                    limit,
                    |e| r.gte_min(e.1),
                    |e| r.lte_max(e.1),
                )
            }
            ZSet::Skip(s) => {
                let b = Bound::Score(r);
                if rev {
                    let start = s.last_in(b);
                    s.collect_from(start, true, offset, limit, |n| r.gte_min(n.score))
                } else {
                    let start = s.first_in(b);
                    s.collect_from(start, false, offset, limit, |n| r.lte_max(n.score))
                }
            }
        }
    }

    /// ZRANGEBYLEX semantics (see [`ZSet::range_by_score`]).
    pub fn range_by_lex(
        &self,
        r: &LexRange,
        rev: bool,
        offset: i64,
        limit: i64,
    ) -> Vec<(&[u8], f64)> {
        if r.is_empty() {
            return Vec::new();
        }
        match self {
            ZSet::Pack(p) => {
                let items: Vec<Item<'_>> = p.iter().collect();
                linear_range(
                    &items,
                    rev,
                    offset,
                    limit,
                    |e| r.gte_min(e.0),
                    |e| r.lte_max(e.0),
                )
            }
            ZSet::Skip(s) => {
                let b = Bound::Lex(r);
                let gte = |n: &Node| r.gte_min(n.member.as_bytes());
                let lte = |n: &Node| r.lte_max(n.member.as_bytes());
                if rev {
                    let start = s.last_in(b);
                    s.collect_from(start, true, offset, limit, gte)
                } else {
                    let start = s.first_in(b);
                    s.collect_from(start, false, offset, limit, lte)
                }
            }
        }
    }

    /// ZCOUNT.
    pub fn count_in_score(&self, r: &ScoreRange) -> usize {
        if r.is_empty() {
            return 0;
        }
        match self {
            ZSet::Pack(_) => self.range_by_score(r, false, 0, -1).len(),
            ZSet::Skip(s) => {
                let b = Bound::Score(r);
                s.count_between(s.first_in(b), s.last_in(b))
            }
        }
    }

    /// ZLEXCOUNT.
    pub fn count_in_lex(&self, r: &LexRange) -> usize {
        if r.is_empty() {
            return 0;
        }
        match self {
            ZSet::Pack(_) => self.range_by_lex(r, false, 0, -1).len(),
            ZSet::Skip(s) => {
                let b = Bound::Lex(r);
                s.count_between(s.first_in(b), s.last_in(b))
            }
        }
    }

    /// Removes 0-based ranks `start..=end` (valid); returns how many.
    pub fn remove_range_by_rank(&mut self, start: usize, end: usize) -> usize {
        if start > end || end >= self.len() {
            return 0;
        }
        match self {
            ZSet::Pack(p) => {
                let all = p.entries_at();
                let from = all[start].0;
                let to = all.get(end + 1).map_or(p.buf.len(), |e| e.0);
                p.remove_bytes(from, to, end - start + 1);
                end - start + 1
            }
            ZSet::Skip(s) => s.delete_rank_range(start + 1, end + 1),
        }
    }

    /// ZREMRANGEBYSCORE.
    pub fn remove_range_by_score(&mut self, r: &ScoreRange) -> usize {
        match self {
            ZSet::Pack(p) => {
                if r.is_empty() {
                    return 0;
                }
                let all = p.entries_at();
                let items: Vec<Item<'_>> = all.iter().map(|e| (e.1, e.2)).collect();
                let gte = |e: &Item<'_>| r.gte_min(e.1);
                let lte = |e: &Item<'_>| r.lte_max(e.1);
                let Some(i) = linear_start(&items, false, &gte, &lte) else {
                    return 0;
                };
                let j = i + items[i..].iter().take_while(|e| lte(e)).count();
                let (from, to) = (all[i].0, all.get(j).map_or(p.buf.len(), |e| e.0));
                p.remove_bytes(from, to, j - i);
                j - i
            }
            ZSet::Skip(s) => {
                let update = s.predecessors_before_min(Bound::Score(r));
                s.delete_run(update, |n| r.lte_max(n.score))
            }
        }
    }

    /// ZREMRANGEBYLEX; returns the removed members. (Over members with
    /// different scores the skiplist's choice depends on its node levels,
    /// so callers log what was removed, not the range.)
    pub fn remove_range_by_lex(&mut self, r: &LexRange) -> Vec<Vec<u8>> {
        match self {
            ZSet::Pack(p) => {
                if r.is_empty() {
                    return Vec::new();
                }
                let all = p.entries_at();
                let items: Vec<Item<'_>> = all.iter().map(|e| (e.1, e.2)).collect();
                let gte = |e: &Item<'_>| r.gte_min(e.0);
                let lte = |e: &Item<'_>| r.lte_max(e.0);
                let Some(i) = linear_start(&items, false, &gte, &lte) else {
                    return Vec::new();
                };
                let j = i + items[i..].iter().take_while(|e| lte(e)).count();
                let removed = items[i..j].iter().map(|e| e.0.to_vec()).collect();
                let (from, to) = (all[i].0, all.get(j).map_or(p.buf.len(), |e| e.0));
                p.remove_bytes(from, to, j - i);
                removed
            }
            ZSet::Skip(s) => {
                let update = s.predecessors_before_min(Bound::Lex(r));
                let mut removed = Vec::new();
                s.delete_run(update, |n| {
                    let ok = r.lte_max(n.member.as_bytes());
                    if ok {
                        removed.push(n.member.as_bytes().to_vec());
                    }
                    ok
                });
                removed
            }
        }
    }

    /// Removes and returns the lowest (`max` false) or highest element.
    pub fn pop(&mut self, max: bool) -> Option<(Vec<u8>, f64)> {
        match self {
            ZSet::Pack(p) => {
                if p.is_empty() {
                    return None;
                }
                let all = p.entries_at();
                let (pos, m, s) = if max { *all.last()? } else { all[0] };
                let out = (m.to_vec(), s);
                p.remove_at(pos);
                Some(out)
            }
            ZSet::Skip(s) => {
                let x = if max { s.tail } else { s.head[0].fwd };
                if x == NIL {
                    return None;
                }
                let n = s.remove_idx(x);
                Some((n.member.as_bytes().to_vec(), n.score))
            }
        }
    }

    /// A random element (`r` picks it uniformly).
    pub fn random_entry(&self, r: u64) -> Option<(&[u8], f64)> {
        let len = self.len() as u64;
        if len == 0 {
            return None;
        }
        match self {
            ZSet::Pack(p) => p.iter().nth((r % len) as usize),
            ZSet::Skip(s) => s.random(r),
        }
    }

    /// One ZSCAN step: the listpack encoding returns everything with cursor
    /// 0 (as Redis does); the skiplist walks its arenas from the cursor (0
    /// starts) until it has returned `count` elements, and returns the next
    /// cursor (0 at the end). Every element present for the whole scan is
    /// returned at least once.
    pub fn scan<'a>(&'a self, cursor: u64, count: usize, mut f: impl FnMut(&'a [u8], f64)) -> u64 {
        match self {
            ZSet::Pack(p) => {
                for (m, s) in p.iter() {
                    f(m, s);
                }
                0
            }
            ZSet::Skip(s) => s.scan(cursor, count, f),
        }
    }

    /// Digest in order (member, score bits), equal across encodings.
    pub fn digest_into(&self, h: &mut impl Hasher) {
        self.len().hash(h);
        for (m, s) in self.iter() {
            m.hash(h);
            s.to_bits().hash(h);
        }
    }

    pub fn heap_size(&self) -> usize {
        match self {
            ZSet::Pack(p) => p.buf.capacity(),
            ZSet::Skip(s) => std::mem::size_of::<SkipList>() + s.heap_size(),
        }
    }

    #[cfg(test)]
    fn check(&self) {
        match self {
            ZSet::Pack(p) => {
                let v: Vec<_> = p.iter().collect();
                assert_eq!(v.len(), p.len());
                for w in v.windows(2) {
                    assert_eq!(cmp_entry(w[0].1, w[0].0, w[1].1, w[1].0), Ordering::Less);
                }
            }
            ZSet::Skip(s) => s.check(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// The reference model: member → score.
    #[derive(Default)]
    struct Model(BTreeMap<Vec<u8>, f64>);

    impl Model {
        fn sorted(&self) -> Vec<(Vec<u8>, f64)> {
            let mut v: Vec<(Vec<u8>, f64)> = self.0.iter().map(|(m, s)| (m.clone(), *s)).collect();
            v.sort_by(|a, b| cmp_entry(a.1, &a.0, b.1, &b.0));
            v
        }
    }

    fn owned(v: Vec<(&[u8], f64)>) -> Vec<(Vec<u8>, f64)> {
        v.into_iter().map(|(m, s)| (m.to_vec(), s)).collect()
    }

    fn same(a: &[(Vec<u8>, f64)], b: &[(Vec<u8>, f64)]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.0 == y.0 && x.1.to_bits() == y.1.to_bits())
    }

    const SMALL: Limits = Limits::DEFAULT;

    #[test]
    fn score_encoding_roundtrips() {
        for s in [
            0.0,
            -0.0,
            1.0,
            -1.0,
            63.0,
            -64.0,
            1e15,
            -9007199254740991.0,
            9007199254740992.0,
            0.1,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
            5e-324,
            f64::MAX,
        ] {
            let mut buf = [0u8; 16];
            let n = write_score(&mut buf, s);
            assert_eq!(n, score_len(s));
            let (back, end) = read_score(&buf, 0);
            assert_eq!(end, n);
            assert_eq!(back.to_bits(), s.to_bits(), "{s}");
        }
        // Small integers take one byte.
        assert_eq!(score_len(5.0), 1);
        assert_eq!(score_len(-31.0), 1);
        assert_eq!(entry_len(b"member:12", 3.0), 11);
    }

    #[test]
    fn listpack_score_text_like_redis() {
        assert_eq!(listpack_score_text(1e17), "100000000000000000");
        assert_eq!(
            listpack_score_text(123456789012345678.0),
            "123456789012345680"
        );
        assert_eq!(
            listpack_score_text(4611686018427387904.0),
            "4611686018427387904"
        );
        assert_eq!(
            listpack_score_text(-4611686018427387904.0),
            "-4611686018427387904"
        );
        assert_eq!(listpack_score_text(1e19), "1e+19");
        assert_eq!(listpack_score_text(1.5), "1.5");
        assert_eq!(listpack_score_text(-0.0), "0");
        assert_eq!(listpack_score_text(f64::INFINITY), "inf");
    }

    #[test]
    fn negative_zero_like_redis() {
        // The listpack stores -0 as the integer 0; the skiplist keeps it.
        let mut z = ZSet::default();
        z.add(b"a", -0.0, 0, &SMALL);
        assert!(z.score(b"a").unwrap().is_sign_positive());
        z.convert_to_skiplist();
        z.add(b"b", -0.0, 0, &SMALL);
        assert!(z.score(b"a").unwrap().is_sign_positive());
        assert!(z.score(b"b").unwrap().is_sign_negative());
    }

    #[test]
    fn listpack_converts_past_limits() {
        let mut z = ZSet::new_for(1, &SMALL);
        for i in 0..128 {
            assert_eq!(
                z.add(format!("m{i}").as_bytes(), i as f64, 0, &SMALL),
                AddResult::Added(i as f64)
            );
        }
        assert_eq!(z.encoding(), "listpack");
        z.add(b"one-more", 0.5, 0, &SMALL);
        assert_eq!(z.encoding(), "skiplist");
        z.check();
        let mut z = ZSet::new_for(1, &SMALL);
        z.add(b"a", 1.0, 0, &SMALL);
        z.add(&[b'x'; 65], 1.0, 0, &SMALL);
        assert_eq!(z.encoding(), "skiplist");
        assert_eq!(ZSet::new_for(65, &SMALL).encoding(), "skiplist");
    }

    #[test]
    fn add_flags_follow_zsetadd() {
        for big in [false, true] {
            let mut z = ZSet::default();
            if big {
                z.convert_to_skiplist();
            }
            assert_eq!(z.add(b"a", 1.0, 0, &SMALL), AddResult::Added(1.0));
            assert_eq!(z.add(b"a", 1.0, 0, &SMALL), AddResult::Unchanged(1.0));
            assert_eq!(z.add(b"a", 5.0, ZADD_NX, &SMALL), AddResult::Nop);
            assert_eq!(z.add(b"b", 5.0, ZADD_XX, &SMALL), AddResult::Nop);
            assert_eq!(z.add(b"a", 0.5, ZADD_GT, &SMALL), AddResult::Nop);
            assert_eq!(z.add(b"a", 2.0, ZADD_GT, &SMALL), AddResult::Updated(2.0));
            assert_eq!(z.add(b"a", 3.0, ZADD_LT, &SMALL), AddResult::Nop);
            assert_eq!(z.add(b"a", 1.5, ZADD_INCR, &SMALL), AddResult::Updated(3.5));
            assert_eq!(
                z.add(b"a", f64::INFINITY, ZADD_INCR, &SMALL),
                AddResult::Updated(f64::INFINITY)
            );
            assert_eq!(
                z.add(b"a", f64::NEG_INFINITY, ZADD_INCR, &SMALL),
                AddResult::Nan
            );
            assert_eq!(z.add(b"c", f64::NAN, 0, &SMALL), AddResult::Nan);
            assert_eq!(z.len(), 1);
            z.check();
        }
    }

    #[test]
    fn ranges_and_ranks_on_both_encodings() {
        for big in [false, true] {
            let mut z = ZSet::default();
            if big {
                z.convert_to_skiplist();
            }
            for (m, s) in [
                (b"a", 1.0),
                (b"b", 2.0),
                (b"c", 2.0),
                (b"d", 3.0),
                (b"e", 5.0),
            ] {
                z.add(m, s, 0, &SMALL);
            }
            z.check();
            assert_eq!(z.rank(b"c", false), Some(2));
            assert_eq!(z.rank(b"c", true), Some(2));
            assert_eq!(z.rank(b"e", true), Some(0));
            assert_eq!(z.rank(b"zz", false), None);
            let r = ScoreRange {
                min: 2.0,
                max: 5.0,
                minex: false,
                maxex: true,
            };
            let got = owned(z.range_by_score(&r, false, 0, -1));
            assert_eq!(
                got.iter().map(|e| e.0.clone()).collect::<Vec<_>>(),
                vec![b"b".to_vec(), b"c".to_vec(), b"d".to_vec()]
            );
            let got = owned(z.range_by_score(&r, true, 1, 1));
            assert_eq!(got, vec![(b"c".to_vec(), 2.0)]);
            assert_eq!(z.count_in_score(&r), 3);
            assert_eq!(owned(z.range_by_rank(1, 2, true)).len(), 2);
            assert_eq!(owned(z.range_by_rank(1, 2, true))[0].0, b"d".to_vec());
            assert_eq!(z.remove_range_by_score(&r), 3);
            assert_eq!(z.len(), 2);
            z.check();
            assert_eq!(z.pop(true), Some((b"e".to_vec(), 5.0)));
            assert_eq!(z.pop(false), Some((b"a".to_vec(), 1.0)));
            assert_eq!(z.pop(false), None);
        }
    }

    #[test]
    fn big_skiplist_range_removal_and_scan() {
        let mut z = ZSet::Skip(Box::default());
        for i in 0..5000 {
            z.add(format!("m{i:05}").as_bytes(), (i % 100) as f64, 0, &SMALL);
        }
        z.check();
        assert_eq!(z.remove_range_by_rank(100, 2999), 2900);
        z.check();
        assert_eq!(z.len(), 2100);
        // A full scan sees every member once (no concurrent changes).
        let mut seen = std::collections::HashSet::new();
        let mut cursor = 0;
        loop {
            cursor = z.scan(cursor, 10, |m, _| {
                assert!(seen.insert(m.to_vec()));
            });
            if cursor == 0 {
                break;
            }
        }
        assert_eq!(seen.len(), 2100);
    }

    #[test]
    fn scan_survives_removals() {
        let mut z = ZSet::Skip(Box::default());
        for i in 0..1000 {
            z.add(format!("m{i}").as_bytes(), i as f64, 0, &SMALL);
        }
        let mut seen = std::collections::HashSet::new();
        let mut removed = std::collections::HashSet::new();
        let mut cursor = 0;
        let mut round = 0u64;
        loop {
            cursor = z.scan(cursor, 7, |m, _| {
                seen.insert(m.to_vec());
            });
            round += 1;
            let victim = format!("m{}", (round * 37) % 1000).into_bytes();
            if z.remove(&victim) {
                removed.insert(victim);
            }
            // New members reuse freed slots.
            z.add(format!("n{round}").as_bytes(), round as f64, 0, &SMALL);
            if round.is_multiple_of(4) {
                let r = ScoreRange {
                    min: (round * 7 % 1000) as f64,
                    max: (round * 7 % 1000 + 40) as f64,
                    minex: false,
                    maxex: false,
                };
                for (m, _) in owned(z.range_by_score(&r, false, 0, -1)) {
                    removed.insert(m);
                }
                z.remove_range_by_score(&r);
            }
            if cursor == 0 {
                break;
            }
        }
        z.check();
        // The test must have compacted the arena mid-scan.
        assert!(removed.len() > 500, "only {} removed", removed.len());
        if let ZSet::Skip(s) = &z {
            assert!(s.compactions > 0, "never compacted");
        }
        for i in 0..1000 {
            let m = format!("m{i}").into_bytes();
            if !removed.contains(&m) {
                assert!(seen.contains(&m), "missed m{i}");
            }
        }
    }

    #[test]
    fn from_entries_picks_encoding() {
        let v: Vec<(Vec<u8>, f64)> = (0..10).map(|i| (vec![b'a' + i], -(i as f64))).collect();
        let z = ZSet::from_entries(v.clone(), &SMALL);
        assert_eq!(z.encoding(), "listpack");
        assert_eq!(z.entries()[0], (&b"j"[..], -9.0));
        let z = ZSet::from_entries(
            v,
            &Limits {
                max_entries: 5,
                max_value: 64,
            },
        );
        assert_eq!(z.encoding(), "skiplist");
        z.check();
        assert_eq!(z.entries()[0], (&b"j"[..], -9.0));
    }

    #[test]
    fn lex_bounds() {
        let r = LexRange {
            min: LexBound::Min,
            minex: true,
            max: LexBound::Max,
            maxex: true,
        };
        assert!(!r.is_empty() && r.gte_min(b"") && r.lte_max(b"\xff"));
        let r = LexRange {
            min: LexBound::Min,
            minex: true,
            max: LexBound::Min,
            maxex: true,
        };
        assert!(r.is_empty());
        let r = LexRange {
            min: LexBound::Str(b"b".to_vec()),
            minex: false,
            max: LexBound::Str(b"b".to_vec()),
            maxex: false,
        };
        assert!(!r.is_empty() && r.gte_min(b"b") && !r.gte_min(b"a") && !r.lte_max(b"ba"));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add(u16, i16, u8),
        Rem(u16),
        RemRank(i16, i16),
        RemScore(i16, i16, bool, bool),
        RemLex(u16, u16, bool, bool),
        Pop(bool),
    }

    fn member(i: u16) -> Vec<u8> {
        // Short members mostly, some long (> 64 bytes) to force conversion.
        if i.is_multiple_of(97) {
            let mut v = vec![b'L'; 70];
            v.extend_from_slice(format!("{i}").as_bytes());
            v
        } else {
            format!("m{:03}", i % 400).into_bytes()
        }
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (any::<u16>(), -50i16..50, 0u8..32).prop_map(|(m, s, f)| Op::Add(m, s, f)),
            3 => any::<u16>().prop_map(Op::Rem),
            1 => (-60i16..60, -60i16..60).prop_map(|(a, b)| Op::RemRank(a, b)),
            1 => (-50i16..50, -50i16..50, any::<bool>(), any::<bool>()).prop_map(|(a, b, x, y)| Op::RemScore(a, b, x, y)),
            1 => (any::<u16>(), any::<u16>(), any::<bool>(), any::<bool>()).prop_map(|(a, b, x, y)| Op::RemLex(a, b, x, y)),
            1 => any::<bool>().prop_map(Op::Pop),
        ]
    }

    fn run_model(ops: Vec<Op>, limits: Limits, start_big: bool) -> Result<(), TestCaseError> {
        let mut z = ZSet::default();
        if start_big {
            z.convert_to_skiplist();
        }
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Add(m, s, flags) => {
                    // Some fractional and infinite scores.
                    let score = match s {
                        49 => f64::INFINITY,
                        -50 => f64::NEG_INFINITY,
                        s if s % 7 == 0 => s as f64 / 4.0,
                        s => s as f64,
                    };
                    let flags = flags
                        & !(if flags & ZADD_NX != 0 {
                            ZADD_XX | ZADD_GT | ZADD_LT
                        } else {
                            0
                        });
                    let flags = if flags & ZADD_GT != 0 {
                        flags & !ZADD_LT
                    } else {
                        flags
                    };
                    let m = member(m);
                    let got = z.add(&m, score, flags, &limits);
                    // Model.
                    let cur = model.0.get(&m).copied();
                    let want = match cur {
                        Some(_) if flags & ZADD_NX != 0 => AddResult::Nop,
                        Some(c) => {
                            let mut ns = score;
                            if flags & ZADD_INCR != 0 {
                                ns += c;
                            }
                            if ns.is_nan() {
                                AddResult::Nan
                            } else if (flags & ZADD_LT != 0 && ns >= c)
                                || (flags & ZADD_GT != 0 && ns <= c)
                            {
                                AddResult::Nop
                            } else if ns != c {
                                model.0.insert(m.clone(), ns);
                                AddResult::Updated(ns)
                            } else {
                                AddResult::Unchanged(ns)
                            }
                        }
                        None if flags & ZADD_XX != 0 => AddResult::Nop,
                        None => {
                            model.0.insert(m.clone(), score);
                            AddResult::Added(score)
                        }
                    };
                    prop_assert_eq!(got, want);
                }
                Op::Rem(m) => {
                    let m = member(m);
                    prop_assert_eq!(z.remove(&m), model.0.remove(&m).is_some());
                }
                Op::RemRank(a, b) => {
                    let len = model.0.len() as i64;
                    let (mut s, mut e) = (a as i64, b as i64);
                    if s < 0 {
                        s += len;
                    }
                    if e < 0 {
                        e += len;
                    }
                    if s < 0 {
                        s = 0;
                    }
                    if s > e || s >= len {
                        continue;
                    }
                    if e >= len {
                        e = len - 1;
                    }
                    let sorted = model.sorted();
                    for (m, _) in &sorted[s as usize..=e as usize] {
                        model.0.remove(m);
                    }
                    prop_assert_eq!(
                        z.remove_range_by_rank(s as usize, e as usize),
                        (e - s + 1) as usize
                    );
                }
                Op::RemScore(a, b, x, y) => {
                    let r = ScoreRange {
                        min: a as f64,
                        max: b as f64,
                        minex: x,
                        maxex: y,
                    };
                    let before = model.0.len();
                    model.0.retain(|_, s| !(r.gte_min(*s) && r.lte_max(*s)));
                    prop_assert_eq!(z.remove_range_by_score(&r), before - model.0.len());
                }
                Op::RemLex(a, b, x, y) => {
                    // Lex ranges are only meaningful when scores are equal:
                    // check them against the model on an equal-score copy.
                    let mut eq = ZSet::default();
                    let mut eqm = Model::default();
                    for (m, _) in model.sorted() {
                        eq.add(&m, 0.0, 0, &limits);
                        eqm.0.insert(m, 0.0);
                    }
                    let bound = |v: u16| match v % 5 {
                        0 => LexBound::Min,
                        1 => LexBound::Max,
                        _ => LexBound::Str(member(v)),
                    };
                    let r = LexRange {
                        min: bound(a),
                        minex: x,
                        max: bound(b),
                        maxex: y,
                    };
                    let want: Vec<(Vec<u8>, f64)> = eqm
                        .sorted()
                        .into_iter()
                        .filter(|(m, _)| !r.is_empty() && r.gte_min(m) && r.lte_max(m))
                        .collect();
                    prop_assert!(same(&owned(eq.range_by_lex(&r, false, 0, -1)), &want));
                    let mut rev = want.clone();
                    rev.reverse();
                    prop_assert!(same(&owned(eq.range_by_lex(&r, true, 0, -1)), &rev));
                    prop_assert_eq!(eq.count_in_lex(&r), want.len());
                    prop_assert_eq!(eq.remove_range_by_lex(&r).len(), want.len());
                    eq.check();
                }
                Op::Pop(max) => {
                    let sorted = model.sorted();
                    let want = if max {
                        sorted.last().cloned()
                    } else {
                        sorted.first().cloned()
                    };
                    if let Some((m, _)) = &want {
                        model.0.remove(m);
                    }
                    prop_assert_eq!(z.pop(max), want);
                }
            }
            z.check();
            prop_assert_eq!(z.len(), model.0.len());
        }
        let sorted = model.sorted();
        prop_assert!(same(&owned(z.entries()), &sorted));
        let n = sorted.len();
        for (i, (m, s)) in sorted.iter().enumerate() {
            prop_assert_eq!(z.rank(m, false), Some(i));
            prop_assert_eq!(z.rank(m, true), Some(n - 1 - i));
            prop_assert_eq!(z.score(m).map(f64::to_bits), Some(s.to_bits()));
        }
        if n > 0 {
            for (start, end) in [(0, n - 1), (n / 3, n / 2), (n - 1, n - 1)] {
                prop_assert!(same(
                    &owned(z.range_by_rank(start, end, false)),
                    &sorted[start..=end]
                ));
                let mut rev: Vec<_> = sorted.clone();
                rev.reverse();
                prop_assert!(same(
                    &owned(z.range_by_rank(start, end, true)),
                    &rev[start..=end]
                ));
            }
        }
        // Score ranges with offsets and limits, both directions.
        for (lo, hi, ex) in [
            (-10.0, 10.0, false),
            (0.0, 0.0, false),
            (f64::NEG_INFINITY, f64::INFINITY, true),
            (3.0, 40.0, true),
        ] {
            let r = ScoreRange {
                min: lo,
                max: hi,
                minex: ex,
                maxex: false,
            };
            let all: Vec<(Vec<u8>, f64)> = sorted
                .iter()
                .filter(|(_, s)| r.gte_min(*s) && r.lte_max(*s))
                .cloned()
                .collect();
            prop_assert_eq!(z.count_in_score(&r), all.len());
            for (off, lim) in [(0i64, -1i64), (1, 2), (0, 0), (3, -5), (-1, 3)] {
                let want: Vec<_> = if off < 0 {
                    vec![]
                } else {
                    all.iter()
                        .skip(off as usize)
                        .take(if lim < 0 { usize::MAX } else { lim as usize })
                        .cloned()
                        .collect()
                };
                prop_assert!(same(&owned(z.range_by_score(&r, false, off, lim)), &want));
                let mut rall = all.clone();
                rall.reverse();
                let want: Vec<_> = if off < 0 {
                    vec![]
                } else {
                    rall.iter()
                        .skip(off as usize)
                        .take(if lim < 0 { usize::MAX } else { lim as usize })
                        .cloned()
                        .collect()
                };
                prop_assert!(same(&owned(z.range_by_score(&r, true, off, lim)), &want));
            }
        }
        // Digest is encoding-independent.
        let other = ZSet::from_entries(
            sorted.clone(),
            &Limits {
                max_entries: 0,
                max_value: 0,
            },
        );
        let (mut h1, mut h2) = (
            std::collections::hash_map::DefaultHasher::new(),
            std::collections::hash_map::DefaultHasher::new(),
        );
        z.digest_into(&mut h1);
        other.digest_into(&mut h2);
        prop_assert_eq!(h1.finish(), h2.finish());
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Default limits: sets start as listpacks and convert on the way.
        #[test]
        fn matches_model_default_limits(ops in proptest::collection::vec(op_strategy(), 1..1500)) {
            run_model(ops, SMALL, false)?;
        }

        /// Always a skiplist, long sequences.
        #[test]
        fn matches_model_skiplist(ops in proptest::collection::vec(op_strategy(), 1..3000)) {
            run_model(ops, SMALL, true)?;
        }

        /// Huge listpack limits: the listpack code handles big sets too.
        #[test]
        fn matches_model_listpack_only(ops in proptest::collection::vec(op_strategy(), 1..800)) {
            run_model(ops, Limits { max_entries: 100_000, max_value: 100_000 }, false)?;
        }
    }
}
