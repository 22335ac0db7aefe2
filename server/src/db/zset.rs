//! Sorted-set values: a listpack of (member, score) pairs ordered by
//! (score, member) while small (`zset-max-listpack-*`), Redis 7.0's
//! "listpack" encoding. The large encoding (an order-statistics structure
//! plus a member index, Redis's "skiplist") is added with the sorted-set
//! commands.

use std::hash::{Hash as _, Hasher};

use crate::db::listpack::Listpack;

#[derive(Clone, Debug)]
pub enum ZSet {
    /// Alternating member, score (8-byte little-endian f64) entries,
    /// ordered by (score, member).
    Listpack(Listpack),
}

impl Default for ZSet {
    fn default() -> Self {
        ZSet::Listpack(Listpack::new())
    }
}

impl ZSet {
    pub fn len(&self) -> usize {
        match self {
            ZSet::Listpack(lp) => lp.len() / 2,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn encoding(&self) -> &'static str {
        match self {
            ZSet::Listpack(_) => "listpack",
        }
    }

    /// (member, score) in order.
    pub fn entries(&self) -> Vec<(&[u8], f64)> {
        match self {
            ZSet::Listpack(lp) => {
                let mut it = lp.iter();
                let mut out = Vec::with_capacity(lp.len() / 2);
                while let (Some(m), Some(s)) = (it.next(), it.next()) {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&s[..8.min(s.len())]);
                    out.push((m, f64::from_le_bytes(b)));
                }
                out
            }
        }
    }

    /// Digest in order (member, score bits), equal across encodings.
    pub fn digest_into(&self, h: &mut impl Hasher) {
        let e = self.entries();
        e.len().hash(h);
        for (m, s) in e {
            m.hash(h);
            s.to_bits().hash(h);
        }
    }

    pub fn heap_size(&self) -> usize {
        match self {
            ZSet::Listpack(lp) => lp.bytes(),
        }
    }
}
