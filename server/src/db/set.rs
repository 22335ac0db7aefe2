//! Set values: a sorted integer array while every member is an integer and
//! the set is small (Redis's intset, `set-max-intset-entries`), a hash set
//! after. Redis 7.0 has no listpack sets.

use hashbrown::HashSet;
use std::hash::{Hash as _, Hasher};

use crate::sds::Sds;

#[derive(Clone, Debug)]
pub enum Set {
    /// Sorted, unique.
    Intset(Vec<i64>),
    Table(HashSet<Sds>),
}

impl Default for Set {
    fn default() -> Self {
        Set::Intset(Vec::new())
    }
}

impl Set {
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

    /// Members as bytes (integers formatted as Redis prints them).
    pub fn members(&self) -> Vec<Vec<u8>> {
        match self {
            Set::Intset(v) => v.iter().map(|n| n.to_string().into_bytes()).collect(),
            Set::Table(t) => t.iter().map(|m| m.to_vec()).collect(),
        }
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
            Set::Table(t) => {
                t.capacity() * (std::mem::size_of::<Sds>() + 1)
                    + t.iter().map(|m| m.heap_size()).sum::<usize>()
            }
        }
    }
}
