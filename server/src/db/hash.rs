//! Hash values: a listpack of field/value pairs while small (Redis's
//! `hash-max-listpack-entries` / `-value` thresholds), a hash table after.

use hashbrown::HashMap;
use std::hash::{Hash as _, Hasher};

use crate::db::listpack::Listpack;
use crate::sds::Sds;

#[derive(Clone, Debug)]
pub enum Hash {
    /// Alternating field, value entries.
    Listpack(Listpack),
    Table(HashMap<Sds, Sds>),
}

impl Default for Hash {
    fn default() -> Self {
        Hash::Listpack(Listpack::new())
    }
}

impl Hash {
    pub fn len(&self) -> usize {
        match self {
            Hash::Listpack(lp) => lp.len() / 2,
            Hash::Table(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn encoding(&self) -> &'static str {
        match self {
            Hash::Listpack(_) => "listpack",
            Hash::Table(_) => "hashtable",
        }
    }

    /// All (field, value) pairs, in storage order.
    pub fn pairs(&self) -> Vec<(&[u8], &[u8])> {
        match self {
            Hash::Listpack(lp) => {
                let mut it = lp.iter();
                let mut out = Vec::with_capacity(lp.len() / 2);
                while let (Some(f), Some(v)) = (it.next(), it.next()) {
                    out.push((f, v));
                }
                out
            }
            Hash::Table(t) => t
                .iter()
                .map(|(f, v)| (f.as_bytes(), v.as_bytes()))
                .collect(),
        }
    }

    /// Order-independent digest (sorted by field), equal across encodings.
    pub fn digest_into(&self, h: &mut impl Hasher) {
        let mut p = self.pairs();
        p.sort();
        p.len().hash(h);
        for (f, v) in p {
            f.hash(h);
            v.hash(h);
        }
    }

    pub fn heap_size(&self) -> usize {
        match self {
            Hash::Listpack(lp) => lp.bytes(),
            Hash::Table(t) => {
                t.capacity() * (2 * std::mem::size_of::<Sds>() + 1)
                    + t.iter()
                        .map(|(f, v)| f.heap_size() + v.heap_size())
                        .sum::<usize>()
            }
        }
    }
}
