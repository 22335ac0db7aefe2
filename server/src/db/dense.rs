//! `DenseMap`: the hash-table encoding of hashes and sets.
//!
//! Elements live densely in a `Vec` and a `hashbrown::HashTable<u32>` indexes
//! them, as the keyspace's own `Table` does: 4 bytes plus a control byte per
//! slot on top of the elements, O(1) uniform random picks (SPOP,
//! SRANDMEMBER, HRANDFIELD) and a scan cursor that survives growth and
//! deletion.
//!
//! Deletion is swap-remove, so a scan walks indices from the end down: the
//! only element that ever moves is the last one, which a descending walk has
//! already visited (or which moves to a slot the walk has not reached yet),
//! so every element present for the whole scan is returned at least once.

use hashbrown::hash_table::{Entry as HEntry, HashTable};
use hashbrown::DefaultHashBuilder;
use std::hash::BuildHasher;

use crate::sds::Sds;
use crate::util::fmt_i64;

/// An element of a hash or set as stored: compact encodings keep canonical
/// integers as integers (as Redis's listpack and intset do), so readers get
/// either bytes or an integer that prints as the original bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem<'a> {
    Str(&'a [u8]),
    Int(i64),
}

impl<'a> Elem<'a> {
    /// Calls `f` with the element's bytes (integers formatted on the stack).
    #[inline]
    pub fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        match *self {
            Elem::Str(s) => f(s),
            Elem::Int(n) => {
                let mut b = [0u8; 20];
                f(fmt_i64(n, &mut b))
            }
        }
    }

    pub fn to_vec(&self) -> Vec<u8> {
        self.with_bytes(|b| b.to_vec())
    }

    pub fn to_sds(&self) -> Sds {
        self.with_bytes(Sds::from_slice)
    }

    /// Length of the element's bytes (HSTRLEN).
    pub fn byte_len(&self) -> usize {
        match *self {
            Elem::Str(s) => s.len(),
            Elem::Int(n) => {
                let mut b = [0u8; 20];
                fmt_i64(n, &mut b).len()
            }
        }
    }
}

/// A map from byte strings to `V` (`()` for sets).
#[derive(Clone)]
pub struct DenseMap<V> {
    index: HashTable<u32>,
    entries: Vec<(Sds, V)>,
    hasher: DefaultHashBuilder,
}

impl<V> Default for DenseMap<V> {
    fn default() -> Self {
        DenseMap::with_capacity(0)
    }
}

impl<V: std::fmt::Debug> std::fmt::Debug for DenseMap<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.entries.iter().map(|(k, v)| (k, v)))
            .finish()
    }
}

impl<V> DenseMap<V> {
    pub fn with_capacity(n: usize) -> Self {
        DenseMap {
            index: HashTable::with_capacity(n),
            entries: Vec::with_capacity(n),
            hasher: DefaultHashBuilder::default(),
        }
    }

    #[inline]
    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn find(&self, key: &[u8]) -> Option<usize> {
        let h = self.hash(key);
        let entries = &self.entries;
        self.index
            .find(h, |&i| entries[i as usize].0.as_bytes() == key)
            .map(|&i| i as usize)
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.find(key).is_some()
    }

    pub fn get(&self, key: &[u8]) -> Option<&V> {
        self.find(key).map(|i| &self.entries[i].1)
    }

    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        self.find(key).map(|i| &mut self.entries[i].1)
    }

    /// Inserts or replaces; returns the previous value.
    pub fn insert(&mut self, key: &[u8], value: V) -> Option<V> {
        let h = self.hash(key);
        let entries = &mut self.entries;
        let hasher = &self.hasher;
        match self.index.entry(
            h,
            |&i| entries[i as usize].0.as_bytes() == key,
            |&i| hasher.hash_one(entries[i as usize].0.as_bytes()),
        ) {
            HEntry::Occupied(o) => {
                let i = *o.get() as usize;
                Some(std::mem::replace(&mut entries[i].1, value))
            }
            HEntry::Vacant(v) => {
                let i = entries.len() as u32;
                entries.push((Sds::from_slice(key), value));
                v.insert(i);
                None
            }
        }
    }

    /// Removes `key`; returns its value if it was present.
    pub fn remove(&mut self, key: &[u8]) -> Option<V> {
        let h = self.hash(key);
        let entries = &self.entries;
        let i = match self
            .index
            .find_entry(h, |&i| entries[i as usize].0.as_bytes() == key)
        {
            Ok(o) => o.remove().0 as usize,
            Err(_) => return None,
        };
        let last = self.entries.len() - 1;
        if i != last {
            // The last element moves into slot `i`: repoint its index slot.
            let lh = self.hash(self.entries[last].0.as_bytes());
            if let Some(slot) = self.index.find_mut(lh, |&j| j as usize == last) {
                *slot = i as u32;
            }
        }
        let (_, v) = self.entries.swap_remove(i);
        self.maybe_shrink();
        Some(v)
    }

    /// Gives memory back once the map is mostly empty, as Redis resizes
    /// dicts below 10% fill.
    fn maybe_shrink(&mut self) {
        let cap = self.entries.capacity();
        if cap > 16 && self.entries.len() * 8 < cap {
            let want = (self.entries.len() * 2).max(4);
            self.entries.shrink_to(want);
            let entries = &self.entries;
            let hasher = &self.hasher;
            self.index
                .shrink_to(want, |&i| hasher.hash_one(entries[i as usize].0.as_bytes()));
        }
    }

    /// The element at dense position `i` (`i < len()`).
    #[inline]
    pub fn at(&self, i: usize) -> (&Sds, &V) {
        let (k, v) = &self.entries[i];
        (k, v)
    }

    /// The elements in dense order.
    pub fn entries_slice(&self) -> &[(Sds, V)] {
        &self.entries
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Sds, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// One scan step: visits up to `count` positions below `cursor` (0
    /// starts a scan) and returns the next cursor, 0 when done.
    pub fn scan<'a>(&'a self, cursor: u64, count: usize, mut f: impl FnMut(&'a Sds, &'a V)) -> u64 {
        let len = self.entries.len() as u64;
        let mut upper = if cursor == 0 { len } else { cursor.min(len) };
        let mut n = 0;
        while upper > 0 && n < count.max(1) {
            upper -= 1;
            let (k, v) = &self.entries[upper as usize];
            f(k, v);
            n += 1;
        }
        upper
    }

    /// Approximate heap bytes (MEMORY USAGE).
    pub fn heap_size(&self) -> usize {
        self.index.capacity() * 5
            + self.entries.capacity() * std::mem::size_of::<(Sds, V)>()
            + self
                .entries
                .iter()
                .map(|(k, _)| k.heap_size())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn insert_get_remove() {
        let mut m: DenseMap<u32> = DenseMap::default();
        for i in 0..1000u32 {
            assert_eq!(m.insert(format!("k{i}").as_bytes(), i), None);
        }
        assert_eq!(m.insert(b"k5", 55), Some(5));
        assert_eq!(m.get(b"k5"), Some(&55));
        for i in (0..1000u32).step_by(2) {
            assert!(m.remove(format!("k{i}").as_bytes()).is_some());
        }
        assert_eq!(m.len(), 500);
        for i in 0..1000u32 {
            assert_eq!(m.contains(format!("k{i}").as_bytes()), i % 2 == 1, "{i}");
        }
        for i in (1..1000u32).step_by(2) {
            m.remove(format!("k{i}").as_bytes());
        }
        assert!(m.is_empty());
        assert!(m.entries.capacity() < 100);
    }

    #[test]
    fn scan_survives_deletes_and_inserts() {
        let mut m: DenseMap<()> = DenseMap::default();
        for i in 0..300 {
            m.insert(format!("m{i}").as_bytes(), ());
        }
        let mut seen = BTreeSet::new();
        let mut removed = BTreeSet::new();
        let mut cursor = 0;
        let mut round = 0;
        loop {
            cursor = m.scan(cursor, 5, |k, _| {
                seen.insert(k.to_vec());
            });
            round += 1;
            let victim = format!("m{}", (round * 53) % 300);
            if m.remove(victim.as_bytes()).is_some() {
                removed.insert(victim.into_bytes());
            }
            m.insert(format!("new{round}").as_bytes(), ());
            if cursor == 0 {
                break;
            }
        }
        for i in 0..300 {
            let k = format!("m{i}").into_bytes();
            assert!(removed.contains(&k) || seen.contains(&k), "missed m{i}");
        }
    }

    proptest! {
        #[test]
        fn matches_btreemap(ops in proptest::collection::vec((0u8..3, 0u8..40, any::<u16>()), 0..400)) {
            let mut m: DenseMap<u16> = DenseMap::default();
            let mut model = BTreeMap::new();
            for (op, k, v) in ops {
                let key = format!("key{k}").into_bytes();
                match op {
                    0 => prop_assert_eq!(m.insert(&key, v), model.insert(key.clone(), v)),
                    1 => prop_assert_eq!(m.remove(&key), model.remove(&key)),
                    _ => prop_assert_eq!(m.get(&key), model.get(&key)),
                }
                prop_assert_eq!(m.len(), model.len());
            }
            let got: BTreeMap<Vec<u8>, u16> = m.iter().map(|(k, v)| (k.to_vec(), *v)).collect();
            prop_assert_eq!(got, model);
        }
    }
}
