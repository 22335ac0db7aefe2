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
//!
//! # Layout
//!
//! - `mod.rs` (this file): the [`ZSet`] enum and its API (the operations
//!   sorted-set commands call, each dispatching to the encoding), ZADD
//!   flags, the listpack [`Limits`], and the (score, member) order.
//! - `listpack.rs`: the small encoding ([`Pack`]), its score codec, and
//!   Redis's linear range algorithms over it.
//! - `skiplist.rs`: the large encoding ([`SkipList`]: arenas, links, hash
//!   index, rank/range searches, ZSCAN over the arenas).
//! - `range.rs`: score and lex intervals ([`ScoreRange`], [`LexRange`]),
//!   shared by both encodings and by the command parsers.

mod listpack;
mod range;
mod skiplist;

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash as _, Hasher};

use crate::sds::Sds;

pub use listpack::{listpack_score_text, Pack, PackIter};
pub use range::{LexBound, LexRange, ScoreRange};
pub use skiplist::SkipList;

use listpack::{entry_len, linear_range, linear_start, Item};
use skiplist::{Bound, Node, SkipIter, NIL};

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
                let x = if max { s.last() } else { s.first() };
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
