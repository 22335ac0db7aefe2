//! The listpack encoding of small sorted sets ([`Pack`]): one byte buffer
//! of `varint(len) member score` entries in (score, member) order, with
//! its compact score codec, plus Redis's listpack range algorithms
//! (`zzlFirstInRange` and the loops of ZRANGEBYSCORE/ZRANGEBYLEX), which
//! work on a materialized slice of the entries. See the parent module for
//! when a set uses this encoding.
//!
//! Apart from the skiplist because the two share nothing but the order:
//! here everything is a linear scan over bytes, as in Redis.

use std::cmp::Ordering;
use std::fmt;

use super::cmp_entry;
use crate::varint::{read_varint, unzigzag, varint_len, write_varint, zigzag};

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
pub(super) fn entry_len(m: &[u8], s: f64) -> usize {
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
    pub(super) buf: Vec<u8>,
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
    pub(super) fn entries_at(&self) -> Vec<(usize, &[u8], f64)> {
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
    pub(super) fn find(&self, m: &[u8]) -> Option<(usize, f64)> {
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
    pub(super) fn insert(&mut self, m: &[u8], s: f64) {
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
    pub(super) fn push_back(&mut self, m: &[u8], s: f64) {
        let at = self.buf.len();
        self.insert_at(at, m, s);
    }

    /// Removes `n` entries occupying bytes `from..to`.
    pub(super) fn remove_bytes(&mut self, from: usize, to: usize, n: usize) {
        self.buf.drain(from..to);
        self.len -= n as u32;
        if self.buf.capacity() - self.buf.len() > 16.max(self.buf.len() / 8) {
            self.buf.shrink_to_fit();
        }
    }

    pub(super) fn remove_at(&mut self, p: usize) {
        let (_, _, _, next) = read_entry(&self.buf, p);
        self.remove_bytes(p, next, 1);
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

pub(super) type Item<'a> = (&'a [u8], f64);

/// `zzlFirstInRange`-style start: index of the first element satisfying
/// `gte_min` (forward) or the last satisfying `lte_max` (reverse), if it is
/// inside the range, after Redis's quick "is in range" test.
pub(super) fn linear_start(
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

pub(super) fn linear_range<'a>(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
