//! The keyspace: per-tenant databases of keys, values and TTLs.

pub mod dense;
pub mod hash;
pub mod list;
pub mod listpack;
pub mod set;
pub mod stream;
pub mod table;
pub mod value;
pub mod zset;

pub use table::{Entry, Table, NO_EXPIRE};
pub use value::{Kind, StrEnc, Value};

/// Databases per tenant, as Redis's default `databases 16`.
pub const DEFAULT_DATABASES: usize = 16;

/// A tenant's databases.
pub struct Keyspace {
    pub dbs: Vec<Table>,
}

impl Keyspace {
    pub fn new(databases: usize) -> Self {
        Keyspace {
            dbs: (0..databases.max(1)).map(|_| Table::new()).collect(),
        }
    }

    pub fn total_keys(&self) -> usize {
        self.dbs.iter().map(|d| d.len()).sum()
    }

    /// An order-independent digest of every database's contents (keys,
    /// values, TTLs), used to check that replaying the propagation log
    /// rebuilds an identical keyspace.
    pub fn digest(&self) -> [u8; 32] {
        use std::hash::{Hash, Hasher};
        let mut acc = [0u64; 4];
        for (dbi, db) in self.dbs.iter().enumerate() {
            for e in db.iter() {
                for (salt, slot) in acc.iter_mut().enumerate() {
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    (salt as u64, dbi as u64).hash(&mut h);
                    e.key.as_bytes().hash(&mut h);
                    e.value.digest_into(&mut h);
                    e.expire_at.hash(&mut h);
                    // Order-independent combination.
                    *slot = slot.wrapping_add(h.finish());
                }
            }
        }
        let mut out = [0u8; 32];
        for (i, a) in acc.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&a.to_le_bytes());
        }
        out
    }
}
