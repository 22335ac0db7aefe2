//! Set values: a sorted integer array while every member is an integer and
//! the set is small (Redis's intset, `set-max-intset-entries`), a hash table
//! after. Redis 7.0 has no listpack sets.
//!
//! Conversions follow Redis 7.0's `t_set.c`: a set created by SADD/SMOVE
//! starts as an intset if its first member is a canonical integer; adding a
//! non-integer, or growing past `set-max-intset-entries` (capped at 2^30),
//! makes it a table, which never converts back. Results of SINTERSTORE,
//! SUNIONSTORE and SDIFFSTORE start as an empty intset and follow the same
//! rule ([`Set::from_members`]).

use std::hash::{Hash as _, Hasher};

use crate::db::dense::{DenseMap, Elem};
use crate::util::{fmt_i64, parse_i64};

#[derive(Clone, Debug)]
pub enum Set {
    /// Sorted, unique.
    Intset(Vec<i64>),
    Table(Box<DenseMap<()>>),
}

impl Default for Set {
    fn default() -> Self {
        Set::Intset(Vec::new())
    }
}

/// Iterates members in storage order (ascending for an intset).
pub enum SetIter<'a> {
    Intset(std::slice::Iter<'a, i64>),
    Table(std::slice::Iter<'a, (crate::sds::Sds, ())>),
}

impl<'a> Iterator for SetIter<'a> {
    type Item = Elem<'a>;
    #[inline]
    fn next(&mut self) -> Option<Elem<'a>> {
        match self {
            SetIter::Intset(it) => it.next().map(|&n| Elem::Int(n)),
            SetIter::Table(it) => it.next().map(|(m, _)| Elem::Str(m.as_bytes())),
        }
    }
}

/// Redis limits intsets to 2^30 entries whatever the config says.
fn intset_cap(max_intset: usize) -> usize {
    max_intset.min(1 << 30)
}

impl Set {
    /// Redis's `setTypeCreate`: the empty set that can hold `first`.
    pub fn new_for(first: &[u8]) -> Set {
        if parse_i64(first).is_some() {
            Set::Intset(Vec::new())
        } else {
            Set::Table(Box::default())
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Set::Intset(v) => v.len(),
            Set::Table(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn encoding(&self) -> &'static str {
        match self {
            Set::Intset(_) => "intset",
            Set::Table(_) => "hashtable",
        }
    }

    pub fn contains(&self, m: &[u8]) -> bool {
        match self {
            Set::Intset(v) => parse_i64(m).is_some_and(|n| v.binary_search(&n).is_ok()),
            Set::Table(t) => t.contains(m),
        }
    }

    /// True if the element (as read from another set) is a member.
    pub fn contains_elem(&self, e: Elem<'_>) -> bool {
        match (self, e) {
            (Set::Intset(v), Elem::Int(n)) => v.binary_search(&n).is_ok(),
            (Set::Intset(_), Elem::Str(s)) => self.contains(s),
            (Set::Table(t), e) => e.with_bytes(|b| t.contains(b)),
        }
    }

    pub fn convert_to_table(&mut self) {
        if let Set::Intset(v) = self {
            let mut t = DenseMap::with_capacity(v.len());
            let mut b = [0u8; 20];
            for &n in v.iter() {
                t.insert(fmt_i64(n, &mut b), ());
            }
            *self = Set::Table(Box::new(t));
        }
    }

    /// Redis's `setTypeAdd`; true if `m` was not a member.
    pub fn add(&mut self, m: &[u8], max_intset: usize) -> bool {
        match self {
            Set::Table(t) => t.insert(m, ()).is_none(),
            Set::Intset(v) => match parse_i64(m) {
                Some(n) => match v.binary_search(&n) {
                    Ok(_) => false,
                    Err(pos) => {
                        v.insert(pos, n);
                        if v.len() > intset_cap(max_intset) {
                            self.convert_to_table();
                        }
                        true
                    }
                },
                None => {
                    self.convert_to_table();
                    if let Set::Table(t) = self {
                        t.insert(m, ());
                    }
                    true
                }
            },
        }
    }

    /// Removes `m`; true if it was a member.
    pub fn remove(&mut self, m: &[u8]) -> bool {
        match self {
            Set::Table(t) => t.remove(m).is_some(),
            Set::Intset(v) => match parse_i64(m).map(|n| v.binary_search(&n)) {
                Some(Ok(pos)) => {
                    v.remove(pos);
                    if v.capacity() > 16 && v.len() * 4 < v.capacity() {
                        v.shrink_to(v.len() * 2);
                    }
                    true
                }
                _ => false,
            },
        }
    }

    pub fn iter(&self) -> SetIter<'_> {
        match self {
            Set::Intset(v) => SetIter::Intset(v.iter()),
            Set::Table(t) => SetIter::Table(t.entries_slice().iter()),
        }
    }

    /// Member at storage position `i` (`i < len()`), for random picks.
    pub fn at(&self, i: usize) -> Elem<'_> {
        match self {
            Set::Intset(v) => Elem::Int(v[i]),
            Set::Table(t) => Elem::Str(t.at(i).0.as_bytes()),
        }
    }

    /// One SSCAN step. An intset is returned whole with cursor 0, as Redis
    /// does; a table visits up to `count` members below `cursor`.
    pub fn scan<'a>(&'a self, cursor: u64, count: usize, mut f: impl FnMut(Elem<'a>)) -> u64 {
        match self {
            Set::Intset(v) => {
                for &n in v {
                    f(Elem::Int(n));
                }
                0
            }
            Set::Table(t) => t.scan(cursor, count, |k, _| f(Elem::Str(k.as_bytes()))),
        }
    }

    /// Builds a set the way SINTERSTORE/SUNIONSTORE/SDIFFSTORE and SPOP's
    /// rebuild do: an empty intset, then `setTypeAdd` of every member.
    pub fn from_members<'a>(members: impl IntoIterator<Item = Elem<'a>>, max_intset: usize) -> Set {
        let mut s = Set::default();
        for m in members {
            m.with_bytes(|b| s.add(b, max_intset));
        }
        s
    }

    /// Members as bytes (integers formatted as Redis prints them).
    pub fn members(&self) -> Vec<Vec<u8>> {
        self.iter().map(|e| e.to_vec()).collect()
    }

    /// Order-independent digest, equal across encodings.
    pub fn digest_into(&self, h: &mut impl Hasher) {
        let mut m = self.members();
        m.sort();
        m.len().hash(h);
        for x in m {
            x.hash(h);
        }
    }

    pub fn heap_size(&self) -> usize {
        match self {
            Set::Intset(v) => v.capacity() * 8,
            Set::Table(t) => std::mem::size_of::<DenseMap<()>>() + t.heap_size(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn intset_rules() {
        let mut s = Set::new_for(b"1");
        assert!(s.add(b"1", 512));
        assert!(s.add(b"-5", 512));
        assert!(!s.add(b"1", 512));
        assert_eq!(s.encoding(), "intset");
        assert!(!s.contains(b"01"));
        assert!(!s.add(b"-5", 512));
        assert_eq!(s.members(), vec![b"-5".to_vec(), b"1".to_vec()]);
        assert!(s.add(b"01", 512));
        assert_eq!(s.encoding(), "hashtable");
        assert!(s.contains(b"01") && s.contains(b"1") && s.contains(b"-5"));
        assert!(s.remove(b"01"));
        assert_eq!(s.encoding(), "hashtable");
        let mut s = Set::default();
        for i in 0..4 {
            s.add(i.to_string().as_bytes(), 3);
        }
        assert_eq!(s.encoding(), "hashtable");
        assert_eq!(Set::new_for(b"x").encoding(), "hashtable");
        let s = Set::from_members([Elem::Int(3), Elem::Str(b"2")], 512);
        assert_eq!(s.encoding(), "intset");
        assert!(s.contains_elem(Elem::Str(b"3")) && s.contains_elem(Elem::Int(2)));
    }

    fn member() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            (-20i64..20).prop_map(|n| n.to_string().into_bytes()),
            proptest::sample::select(vec![
                "a",
                "-0",
                "007",
                "+1",
                "",
                "9223372036854775807",
                "-9223372036854775808",
                "9223372036854775808",
            ])
            .prop_map(|s| s.as_bytes().to_vec()),
        ]
    }

    proptest! {
        /// Random SADD/SREM/SISMEMBER sequences against a BTreeSet, with the
        /// intset → hashtable rule as the model of the encoding.
        #[test]
        fn matches_btreeset_model(
            ops in proptest::collection::vec((0u8..4, member()), 0..300),
            max_intset in 0usize..25,
        ) {
            let mut s = Set::default();
            let mut model: BTreeSet<Vec<u8>> = BTreeSet::new();
            let mut table = false;
            for (op, m) in ops {
                match op {
                    0 | 1 => {
                        let new = model.insert(m.clone());
                        prop_assert_eq!(s.add(&m, max_intset), new);
                        if parse_i64(&m).is_none() || model.len() > max_intset {
                            table = true;
                        }
                    }
                    2 => prop_assert_eq!(s.remove(&m), model.remove(&m)),
                    _ => prop_assert_eq!(s.contains(&m), model.contains(&m)),
                }
                prop_assert_eq!(s.len(), model.len());
                prop_assert_eq!(s.encoding(), if table { "hashtable" } else { "intset" });
                for i in 0..s.len() {
                    prop_assert!(model.contains(&s.at(i).to_vec()));
                }
            }
            let got: BTreeSet<Vec<u8>> = s.members().into_iter().collect();
            prop_assert_eq!(&got, &model);
            let mut seen = BTreeSet::new();
            let mut c = 0;
            loop {
                c = s.scan(c, 2, |e| { seen.insert(e.to_vec()); });
                if c == 0 { break; }
            }
            prop_assert_eq!(seen, model);
        }
    }
}
