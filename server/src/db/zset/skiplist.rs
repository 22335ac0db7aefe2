//! The skiplist encoding of large sorted sets ([`SkipList`]): Redis's
//! `zskiplist` (levels, spans, back links) kept in per-height index arenas
//! instead of pointers, each link carrying the score of its target, plus a
//! member → node hash index; the rank, score and lex searches over it;
//! arena compaction; and ZSCAN over the arenas. See the parent module for
//! the design and its guarantees.
//!
//! Apart from the listpack because it is a self-contained data structure
//! with its own invariants (checked by `SkipList::check` in tests).

use std::fmt;
use std::hash::BuildHasher;

use hashbrown::hash_table::HashTable;
use hashbrown::DefaultHashBuilder;

use super::{LexRange, ScoreRange};
use crate::sds::Sds;

const MAX_LEVEL: usize = 32;
pub(super) const NIL: u32 = u32::MAX;
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
pub(super) struct Node {
    pub(super) member: Sds,
    pub(super) score: f64,
    /// The previous node on level 0 (NIL for the first), or FREE.
    pub(super) back: u32,
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
    pub(super) compactions: usize,
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

    /// The first node on level 0 (NIL when empty).
    pub(super) fn first(&self) -> u32 {
        self.head[0].fwd
    }

    /// The last node (NIL when empty).
    pub(super) fn last(&self) -> u32 {
        self.tail
    }

    #[inline]
    pub(super) fn node(&self, x: u32) -> &Node {
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
    pub(super) fn next(&self, x: u32) -> u32 {
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

    pub(super) fn find(&self, m: &[u8]) -> Option<u32> {
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
    pub(super) fn insert(&mut self, member: Sds, score: f64) -> u32 {
        let (update, rank) = self.insert_point(score, member.as_bytes());
        let level = self.random_level();
        let id = self.alloc(
            level,
            Node {
                member,
                score,
                back: NIL,
            },
        );
        self.link_in(id, update, rank);
        self.index_insert(id);
        id
    }

    /// Where (score, m) goes: on each level, the last node before it and
    /// that node's rank.
    fn insert_point(&self, score: f64, m: &[u8]) -> ([u32; MAX_LEVEL], [usize; MAX_LEVEL]) {
        let mut update = [HEAD; MAX_LEVEL];
        let mut rank = [0usize; MAX_LEVEL];
        let mut x = HEAD;
        for i in (0..self.level).rev() {
            rank[i] = if i == self.level - 1 { 0 } else { rank[i + 1] };
            while let Some(f) = self.step_lt(x, i, score, m) {
                rank[i] += self.span(x, i);
                x = f;
            }
            update[i] = x;
        }
        (update, rank)
    }

    /// Links node `id` (counted in `len`, its score set, in no level) in
    /// after `update` ([`insert_point`](Self::insert_point)), at its height.
    fn link_in(&mut self, id: u32, mut update: [u32; MAX_LEVEL], mut rank: [usize; MAX_LEVEL]) {
        let level = id_height(id);
        let score = self.node(id).score;
        if level > self.level {
            for i in self.level..level {
                rank[i] = 0;
                update[i] = HEAD;
                self.head[i].span = (self.len - 1) as u32;
            }
            self.level = level;
        }
        self.node_mut(id).back = if update[0] == HEAD { NIL } else { update[0] };
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
    pub(super) fn predecessors_before_min(&self, b: Bound<'_>) -> [u32; MAX_LEVEL] {
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
    pub(super) fn remove_idx(&mut self, x: u32) -> Node {
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
    pub(super) fn update_score(&mut self, x: u32, score: f64) {
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
        // It moves: out of every level and in at its new place, as the
        // same node (its height, slot, member and index entry stay; Redis
        // reuses the member and sets the dict entry it already found).
        let update = {
            let n = self.node(x);
            self.predecessors(n.score, n.member.as_bytes())
        };
        self.unlink(x, &update);
        self.node_mut(x).score = score;
        let (update, rank) = {
            let n = self.node(x);
            self.insert_point(score, n.member.as_bytes())
        };
        self.link_in(x, update, rank);
    }

    /// 1-based rank of the node `id` (`zslGetRank`).
    pub(super) fn rank_of(&self, id: u32) -> usize {
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
    pub(super) fn by_rank(&self, rank: usize) -> u32 {
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
    pub(super) fn first_in(&self, b: Bound<'_>) -> (u32, usize) {
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
    pub(super) fn last_in(&self, b: Bound<'_>) -> (u32, usize) {
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
    pub(super) fn delete_run(
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
    pub(super) fn delete_rank_range(&mut self, start: usize, end: usize) -> usize {
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
    pub(super) fn collect_from(
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
    pub(super) fn count_between(
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

    pub(super) fn iter(&self) -> SkipIter<'_> {
        SkipIter {
            list: self,
            x: self.head[0].fwd,
        }
    }

    /// A random element: a random arena slot (tiers stay mostly full), or a
    /// random rank when several tries hit free slots.
    pub(super) fn random(&self, r: u64) -> Option<(&[u8], f64)> {
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
    pub(super) fn scan<'a>(
        &'a self,
        cursor: u64,
        count: usize,
        mut f: impl FnMut(&'a [u8], f64),
    ) -> u64 {
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

    pub(super) fn heap_size(&self) -> usize {
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
    pub(super) fn check(&self) {
        use super::cmp_entry;
        use std::cmp::Ordering;
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
pub(super) enum Bound<'r> {
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

pub(super) struct SkipIter<'a> {
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

#[cfg(test)]
mod tests {
    use super::super::{Limits, ScoreRange, ZSet};

    const SMALL: Limits = Limits::DEFAULT;

    fn owned(v: Vec<(&[u8], f64)>) -> Vec<(Vec<u8>, f64)> {
        v.into_iter().map(|(m, s)| (m.to_vec(), s)).collect()
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
}
