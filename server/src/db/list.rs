//! List values. Redis 7.0 reports every list as "quicklist"; anykv keeps
//! a ring buffer of small strings, which gives O(1) pushes and pops at both
//! ends and O(1) indexing (LINDEX, LSET, LRANGE offsets).

use std::collections::VecDeque;
use std::hash::{Hash as _, Hasher};

use crate::sds::Sds;

#[derive(Clone, Debug, Default)]
pub struct List {
    pub items: VecDeque<Sds>,
}

impl List {
    pub fn new() -> Self {
        List::default()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn encoding(&self) -> &'static str {
        "quicklist"
    }

    /// Order-sensitive digest of the elements.
    pub fn digest_into(&self, h: &mut impl Hasher) {
        self.items.len().hash(h);
        for i in &self.items {
            i.as_bytes().hash(h);
        }
    }

    pub fn heap_size(&self) -> usize {
        self.items.capacity() * std::mem::size_of::<Sds>()
            + self.items.iter().map(|s| s.heap_size()).sum::<usize>()
    }
}
