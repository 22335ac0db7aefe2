//! `Listpack`: a compact sequence of byte strings in one allocation.
//!
//! Small hashes, sets and sorted sets are the common case (a session with a
//! dozen fields, a leaderboard page), and per-element allocations would cost
//! several times their payload. Like Redis's listpack, entries are packed
//! back to back as `varint(len) bytes`; operations are linear scans, which
//! is faster than hashing for the small sizes (≤ 128 entries by default)
//! where this encoding is used, and callers convert to a real table past
//! the `*-max-listpack-*` thresholds.

use crate::varint::{put_varint, read_varint, varint_len};

/// Packed byte strings.
#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub struct Listpack {
    buf: Vec<u8>,
    len: u32,
}

/// Decodes the entry at `pos`: (payload start, payload end).
#[inline]
fn entry_at(buf: &[u8], pos: usize) -> (usize, usize) {
    let (n, p) = read_varint(buf, pos);
    (p, p + n as usize)
}

fn encode(v: &[u8]) -> Vec<u8> {
    let mut e = Vec::with_capacity(v.len() + varint_len(v.len() as u64));
    put_varint(&mut e, v.len() as u64);
    e.extend_from_slice(v);
    e
}

impl Listpack {
    pub fn new() -> Self {
        Listpack::default()
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of packed data (memory accounting).
    pub fn bytes(&self) -> usize {
        self.buf.capacity()
    }

    pub fn iter(&self) -> Iter<'_> {
        Iter {
            buf: &self.buf,
            pos: 0,
        }
    }

    /// Byte offset of entry `i` (O(i)); `len()` gives the end offset.
    fn offset(&self, i: usize) -> usize {
        let mut pos = 0;
        for _ in 0..i {
            pos = entry_at(&self.buf, pos).1;
        }
        pos
    }

    pub fn get(&self, i: usize) -> Option<&[u8]> {
        if i >= self.len() {
            return None;
        }
        let (s, e) = entry_at(&self.buf, self.offset(i));
        Some(&self.buf[s..e])
    }

    pub fn push_back(&mut self, v: &[u8]) {
        put_varint(&mut self.buf, v.len() as u64);
        self.buf.extend_from_slice(v);
        self.len += 1;
    }

    pub fn push_front(&mut self, v: &[u8]) {
        self.insert(0, v);
    }

    /// Inserts `v` so it becomes entry `i` (`i == len()` appends).
    pub fn insert(&mut self, i: usize, v: &[u8]) {
        let at = self.offset(i.min(self.len()));
        let e = encode(v);
        self.buf.splice(at..at, e);
        self.len += 1;
    }

    /// Removes entry `i`.
    pub fn remove(&mut self, i: usize) {
        if i >= self.len() {
            return;
        }
        let at = self.offset(i);
        let (_, end) = entry_at(&self.buf, at);
        self.buf.drain(at..end);
        self.len -= 1;
    }

    /// Removes `n` entries starting at `i`.
    pub fn remove_range(&mut self, i: usize, n: usize) {
        if i >= self.len() || n == 0 {
            return;
        }
        let n = n.min(self.len() - i);
        let at = self.offset(i);
        let mut end = at;
        for _ in 0..n {
            end = entry_at(&self.buf, end).1;
        }
        self.buf.drain(at..end);
        self.len -= n as u32;
    }

    /// Replaces entry `i` with `v`.
    pub fn replace(&mut self, i: usize, v: &[u8]) {
        if i >= self.len() {
            return;
        }
        let at = self.offset(i);
        let (_, end) = entry_at(&self.buf, at);
        self.buf.splice(at..end, encode(v));
    }

    /// Index of the first entry equal to `v` among entries `0, step, 2*step…`
    /// (step 2 finds hash fields / zset members, skipping their values).
    pub fn find(&self, v: &[u8], step: usize) -> Option<usize> {
        let step = step.max(1);
        let mut pos = 0;
        let mut i = 0;
        while i < self.len() {
            let (s, e) = entry_at(&self.buf, pos);
            if &self.buf[s..e] == v {
                return Some(i);
            }
            pos = e;
            for _ in 1..step {
                if i + 1 < self.len() {
                    pos = entry_at(&self.buf, pos).1;
                }
                i += 1;
            }
            i += 1;
        }
        None
    }

    /// Releases spare capacity.
    pub fn shrink(&mut self) {
        self.buf.shrink_to_fit();
    }
}

pub struct Iter<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let (s, e) = entry_at(self.buf, self.pos);
        self.pos = e;
        Some(&self.buf[s..e])
    }
}

impl<'a> FromIterator<&'a [u8]> for Listpack {
    fn from_iter<I: IntoIterator<Item = &'a [u8]>>(it: I) -> Self {
        let mut lp = Listpack::new();
        for v in it {
            lp.push_back(v);
        }
        lp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn basic_ops() {
        let mut lp = Listpack::new();
        lp.push_back(b"b");
        lp.push_front(b"a");
        lp.push_back(&[7u8; 300]);
        assert_eq!(lp.len(), 3);
        assert_eq!(lp.get(0), Some(&b"a"[..]));
        assert_eq!(lp.get(2).map(|v| v.len()), Some(300));
        lp.replace(1, b"bee");
        lp.insert(1, b"x");
        assert_eq!(
            lp.iter().collect::<Vec<_>>(),
            vec![&b"a"[..], b"x", b"bee", &[7u8; 300]]
        );
        assert_eq!(lp.find(b"bee", 1), Some(2));
        assert_eq!(lp.find(b"bee", 2), Some(2));
        assert_eq!(lp.find(b"x", 2), None);
        lp.remove(0);
        lp.remove_range(1, 5);
        assert_eq!(lp.iter().collect::<Vec<_>>(), vec![&b"x"[..]]);
    }

    proptest! {
        /// Behaves like a Vec<Vec<u8>> under random edits.
        #[test]
        fn matches_vec_model(ops in proptest::collection::vec((0u8..5, 0usize..20, proptest::collection::vec(any::<u8>(), 0..200)), 0..100)) {
            let mut lp = Listpack::new();
            let mut model: Vec<Vec<u8>> = Vec::new();
            for (op, i, v) in ops {
                match op {
                    0 => { lp.push_back(&v); model.push(v); }
                    1 => { let i = i.min(model.len()); lp.insert(i, &v); model.insert(i, v); }
                    2 => if i < model.len() { lp.remove(i); model.remove(i); },
                    3 => if i < model.len() { lp.replace(i, &v); model[i] = v; },
                    _ => { let n = i % 4; if i / 4 < model.len() { let s = i / 4; lp.remove_range(s, n); let e = (s + n).min(model.len()); model.drain(s..e); } }
                }
                prop_assert_eq!(lp.len(), model.len());
            }
            let got: Vec<Vec<u8>> = lp.iter().map(|v| v.to_vec()).collect();
            prop_assert_eq!(got, model);
        }
    }
}
