//! `Table`: one database's key → entry map.
//!
//! Entries live densely in a `Vec` and a `hashbrown::HashTable<u32>` indexes
//! them by key. Compared with a `HashMap<Key, Value>` this costs 5 bytes per
//! hash slot instead of ~60, which matters at a million keys, and the dense
//! vector gives O(1) random sampling (RANDOMKEY, eviction, active expiry)
//! and a SCAN cursor that survives growth.
//!
//! Deletion is swap-remove, so SCAN walks indices from the end down: the only
//! element that ever moves is the last one, which a descending walk has
//! already visited, so every key present for the whole scan is returned (a
//! key may be returned twice, which Redis also allows).

use hashbrown::hash_table::{Entry as HEntry, HashTable};
use hashbrown::DefaultHashBuilder;
use std::hash::BuildHasher;

use crate::db::value::Value;
use crate::sds::Sds;

/// `expire_at` of a key without a TTL.
pub const NO_EXPIRE: i64 = i64::MIN;
const NOT_VOLATILE: u32 = u32::MAX;

/// One key with its value and metadata.
pub struct Entry {
    pub key: Sds,
    pub value: Value,
    /// Absolute expiry in Unix ms, or [`NO_EXPIRE`].
    pub expire_at: i64,
    /// LRU clock (seconds, wrapping) or LFU counter; see `OBJECT IDLETIME/FREQ`.
    pub lru: u32,
    /// Position in `Table::volatile`, or `NOT_VOLATILE`.
    vpos: u32,
}

impl Entry {
    pub fn has_expire(&self) -> bool {
        self.expire_at != NO_EXPIRE
    }
}

/// A database: keys, values, TTLs.
pub struct Table {
    index: HashTable<u32>,
    entries: Vec<Entry>,
    /// Indices of entries with a TTL (sampled by active expiry).
    volatile: Vec<u32>,
    hasher: DefaultHashBuilder,
    /// A point-in-time snapshot of this table in progress, if any.
    snap: Option<Box<SnapCursor>>,
}

/// A snapshot in progress over one table, without fork.
///
/// The snapshot must equal the table as it was when it began, while
/// writes go on. The driver walks entry indices upwards from `next`;
/// every mutation path of the table (`entry_mut`, `set_expire`,
/// `remove_at`, `upsert`) first runs [`Table::barrier`], which writes the
/// entry's *pre-image* into `saved` if the walk has not reached it yet and
/// marks it done, so the walk skips it. Entries inserted after the start
/// are marked done at once (not part of the snapshot). Swap-remove moves
/// the last entry into the hole: its state moves with it, and if the hole
/// is behind the walk the moved entry is written out at once. Memory
/// beyond the table is the encoded pre-images of entries written while
/// the snapshot runs, not a copy of everything (as fork's copy-on-write
/// pages can become).
pub struct SnapCursor {
    /// Database index the records carry (the table may be moved by
    /// SWAPDB or detached by FLUSHALL while the snapshot runs).
    pub db: u32,
    /// Entries at indices below this were written or excluded.
    next: u32,
    /// Per entry index: already written (pre-image) or not part of it.
    done: Vec<u64>,
    /// Records written by the barrier, for the driver to collect.
    saved: Vec<u8>,
    saved_count: u32,
}

impl SnapCursor {
    /// Writes `e` as it is now (a pre-image) into the saved records.
    fn save(&mut self, e: &Entry) {
        crate::persist::codec::encode_entry(
            &mut self.saved,
            self.db,
            &e.key,
            &e.value,
            e.expire_at,
        );
        self.saved_count += 1;
    }

    #[inline]
    fn is_done(&self, i: u32) -> bool {
        self.done
            .get(i as usize / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    #[inline]
    fn set_done(&mut self, i: u32, v: bool) {
        let w = i as usize / 64;
        if w >= self.done.len() {
            if !v {
                return;
            }
            self.done.resize(w + 1, 0);
        }
        if v {
            self.done[w] |= 1 << (i % 64);
        } else {
            self.done[w] &= !(1 << (i % 64));
        }
    }
}

impl Default for Table {
    fn default() -> Self {
        Table::new()
    }
}

impl Table {
    pub fn new() -> Self {
        Table {
            index: HashTable::new(),
            entries: Vec::new(),
            volatile: Vec::new(),
            hasher: DefaultHashBuilder::default(),
            snap: None,
        }
    }

    /// The table's hasher, so a loader can hash keys on another thread.
    pub fn hasher(&self) -> DefaultHashBuilder {
        self.hasher
    }

    /// Hash-index buckets the table has room for (a power of two).
    pub fn buckets(&self) -> usize {
        // hashbrown keeps at most 7/8 of its buckets full.
        (self.index.capacity() * 8 / 7).next_power_of_two()
    }

    /// Inserts or replaces in one probe (loading a snapshot, where keys
    /// are normally absent: `find` + `insert_new` hashed and probed twice).
    /// Not for use while a snapshot of this table runs.
    pub fn load_insert(&mut self, key: Sds, value: Value) -> u32 {
        let h = self.hash(&key);
        self.load_insert_hashed(h, key, value)
    }

    /// [`Table::load_insert`] with the key's hash computed by the caller
    /// (with [`Table::hasher`]).
    pub fn load_insert_hashed(&mut self, h: u64, key: Sds, value: Value) -> u32 {
        let entries = &mut self.entries;
        let hasher = &self.hasher;
        match self.index.entry(
            h,
            |&i| entries[i as usize].key.as_bytes() == key.as_bytes(),
            |&i| hasher.hash_one(entries[i as usize].key.as_bytes()),
        ) {
            HEntry::Occupied(o) => {
                let idx = *o.get();
                entries[idx as usize].value = value;
                idx
            }
            HEntry::Vacant(v) => {
                let idx = entries.len() as u32;
                v.insert(idx);
                entries.push(Entry {
                    key,
                    value,
                    expire_at: NO_EXPIRE,
                    lru: 0,
                    vpos: NOT_VOLATILE,
                });
                idx
            }
        }
    }

    /// Makes room for `n` more keys (loading a snapshot).
    pub fn reserve(&mut self, n: usize) {
        self.entries.reserve(n);
        let entries = &self.entries;
        let hasher = &self.hasher;
        self.index
            .reserve(n, |&i| hasher.hash_one(entries[i as usize].key.as_bytes()));
    }

    /// Starts a snapshot of this table (see [`SnapCursor`]).
    pub fn begin_snapshot(&mut self, db: u32) {
        self.snap = Some(Box::new(SnapCursor {
            db,
            next: 0,
            done: Vec::new(),
            saved: Vec::new(),
            saved_count: 0,
        }));
    }

    pub fn snapshot_active(&self) -> bool {
        self.snap.is_some()
    }

    /// Writes up to `max` not-yet-written entries into `out`; returns how
    /// many records were written and whether the walk is complete.
    pub fn snapshot_step(&mut self, max: usize, out: &mut Vec<u8>) -> (u32, bool) {
        let Table { snap, entries, .. } = self;
        let Some(c) = snap.as_deref_mut() else {
            return (0, true);
        };
        let mut n = 0u32;
        while (c.next as usize) < entries.len() && (n as usize) < max {
            let i = c.next;
            if !c.is_done(i) {
                let e = &entries[i as usize];
                crate::persist::codec::encode_entry(out, c.db, &e.key, &e.value, e.expire_at);
                n += 1;
            }
            c.next += 1;
        }
        (n, c.next as usize >= entries.len())
    }

    /// Takes the pre-images the barrier wrote: (records, count).
    pub fn snapshot_take_saved(&mut self) -> (Vec<u8>, u32) {
        match self.snap.as_deref_mut() {
            Some(c) => {
                let n = std::mem::take(&mut c.saved_count);
                (std::mem::take(&mut c.saved), n)
            }
            None => (Vec::new(), 0),
        }
    }

    /// Ends the snapshot (completed or abandoned).
    pub fn end_snapshot(&mut self) {
        self.snap = None;
    }

    /// The write barrier: before entry `idx` changes, a snapshot that has
    /// not written it yet gets its pre-image.
    #[inline]
    fn barrier(&mut self, idx: u32) {
        let Table { snap, entries, .. } = self;
        if let Some(c) = snap.as_deref_mut() {
            if idx >= c.next && !c.is_done(idx) {
                c.save(&entries[idx as usize]);
                c.set_done(idx, true);
            }
        }
    }

    #[inline]
    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of keys with a TTL.
    pub fn volatile_len(&self) -> usize {
        self.volatile.len()
    }

    /// Index of `key`, if present (expired or not).
    #[inline]
    pub fn find(&self, key: &[u8]) -> Option<u32> {
        let h = self.hash(key);
        let entries = &self.entries;
        self.index
            .find(h, |&i| entries[i as usize].key.as_bytes() == key)
            .copied()
    }

    #[inline]
    pub fn entry(&self, idx: u32) -> &Entry {
        &self.entries[idx as usize]
    }

    /// Mutable access to an entry: runs the snapshot write barrier.
    #[inline]
    pub fn entry_mut(&mut self, idx: u32) -> &mut Entry {
        self.barrier(idx);
        &mut self.entries[idx as usize]
    }

    /// Updates the LRU/LFU field only (not part of snapshots, so no
    /// barrier: reads must not copy values).
    #[inline]
    pub fn set_lru(&mut self, idx: u32, lru: u32) {
        self.entries[idx as usize].lru = lru;
    }

    /// Inserts a key known to be absent; returns its index.
    pub fn insert_new(&mut self, key: Sds, value: Value, lru: u32) -> u32 {
        let idx = self.entries.len() as u32;
        let h = self.hash(&key);
        self.entries.push(Entry {
            key,
            value,
            expire_at: NO_EXPIRE,
            lru,
            vpos: NOT_VOLATILE,
        });
        let entries = &self.entries;
        let hasher = &self.hasher;
        self.index.insert_unique(h, idx, |&i| {
            hasher.hash_one(entries[i as usize].key.as_bytes())
        });
        if let Some(c) = self.snap.as_deref_mut() {
            // Created after the snapshot began: not part of it.
            c.set_done(idx, true);
        }
        idx
    }

    /// Removes the entry at `idx`, returning it.
    pub fn remove_at(&mut self, idx: u32) -> Entry {
        self.barrier(idx);
        // Leave the volatile set but keep `expire_at`: RENAME/MOVE carry
        // the TTL over from the returned entry.
        let at = self.entries[idx as usize].expire_at;
        self.set_expire(idx, NO_EXPIRE);
        self.entries[idx as usize].expire_at = at;
        let h = self.hash(&self.entries[idx as usize].key);
        if let Ok(e) = self.index.find_entry(h, |&i| i == idx) {
            e.remove();
        }
        let last = (self.entries.len() - 1) as u32;
        if idx != last {
            // The last entry moves into `idx`: repoint its index slot.
            let lh = self.hash(&self.entries[last as usize].key);
            if let Some(slot) = self.index.find_mut(lh, |&i| i == last) {
                *slot = idx;
            }
            let vpos = self.entries[last as usize].vpos;
            if vpos != NOT_VOLATILE {
                self.volatile[vpos as usize] = idx;
            }
            let Table { snap, entries, .. } = self;
            if let Some(c) = snap.as_deref_mut() {
                let handled = last < c.next || c.is_done(last);
                if idx >= c.next {
                    c.set_done(idx, handled);
                } else if !handled {
                    // Moving behind the walk: write it out now.
                    c.save(&entries[last as usize]);
                }
                c.set_done(last, false);
            }
        } else if let Some(c) = self.snap.as_deref_mut() {
            c.set_done(idx, false);
        }
        let out = self.entries.swap_remove(idx as usize);
        if let Some(c) = self.snap.as_deref_mut() {
            c.next = c.next.min(self.entries.len() as u32);
        }
        out
    }

    /// Removes `key` if present.
    pub fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        self.find(key).map(|i| self.remove_at(i))
    }

    /// Sets (or with [`NO_EXPIRE`] clears) the TTL of the entry at `idx`.
    pub fn set_expire(&mut self, idx: u32, at: i64) {
        self.barrier(idx);
        let e = &mut self.entries[idx as usize];
        e.expire_at = at;
        if at == NO_EXPIRE {
            if e.vpos != NOT_VOLATILE {
                let pos = e.vpos as usize;
                e.vpos = NOT_VOLATILE;
                self.volatile.swap_remove(pos);
                if pos < self.volatile.len() {
                    let moved = self.volatile[pos];
                    self.entries[moved as usize].vpos = pos as u32;
                }
            }
        } else if e.vpos == NOT_VOLATILE {
            e.vpos = self.volatile.len() as u32;
            self.volatile.push(idx);
        }
    }

    /// Index of a uniformly random key.
    pub fn random_index(&self, r: u64) -> Option<u32> {
        if self.entries.is_empty() {
            None
        } else {
            Some((r % self.entries.len() as u64) as u32)
        }
    }

    /// Index of a random key that has a TTL.
    pub fn random_volatile(&self, r: u64) -> Option<u32> {
        if self.volatile.is_empty() {
            None
        } else {
            Some(self.volatile[(r % self.volatile.len() as u64) as usize])
        }
    }

    /// One SCAN step: visits up to `count` indices below the cursor and
    /// returns the next cursor (0 when done). Cursor 0 starts a new scan.
    pub fn scan(&self, cursor: u64, count: usize, mut f: impl FnMut(&Entry)) -> u64 {
        let len = self.entries.len() as u64;
        let mut upper = if cursor == 0 { len } else { cursor.min(len) };
        let mut n = 0;
        while upper > 0 && n < count {
            upper -= 1;
            f(&self.entries[upper as usize]);
            n += 1;
        }
        upper
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Approximate bytes used by this table's own structures.
    pub fn overhead_bytes(&self) -> usize {
        self.index.capacity() * 5
            + self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.volatile.capacity() * 4
    }

    /// Inserts or replaces; returns the index.
    pub fn upsert(&mut self, key: &[u8], value: Value, lru: u32) -> u32 {
        if let Some(idx) = self.find(key) {
            self.barrier(idx);
            let e = &mut self.entries[idx as usize];
            e.value = value;
            e.lru = lru;
            return idx;
        }
        self.insert_new(Sds::from_slice(key), value, lru)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn v(s: &str) -> Value {
        Value::from_bytes(s.as_bytes())
    }

    #[test]
    fn entry_is_64_bytes() {
        // Memory per key is the point of this layout: keep it from creeping.
        assert_eq!(std::mem::size_of::<Value>(), 24);
        assert_eq!(std::mem::size_of::<Entry>(), 64);
    }

    #[test]
    fn insert_find_remove_keeps_index_consistent() {
        let mut t = Table::new();
        for i in 0..1000 {
            t.upsert(format!("k{i}").as_bytes(), v("x"), 0);
        }
        for i in (0..1000).step_by(3) {
            let idx = t.find(format!("k{i}").as_bytes()).unwrap();
            t.set_expire(idx, 10);
        }
        for i in (0..1000).step_by(2) {
            let e = t.remove(format!("k{i}").as_bytes()).unwrap();
            // A removed entry keeps its TTL (RENAME and MOVE rely on it).
            assert_eq!(e.has_expire(), i % 3 == 0);
        }
        for i in 0..1000 {
            let present = t.find(format!("k{i}").as_bytes()).is_some();
            assert_eq!(present, i % 2 == 1, "k{i}");
        }
        // Every volatile slot points back at an entry that has a TTL.
        for (pos, &idx) in t.volatile.iter().enumerate() {
            assert_eq!(t.entries[idx as usize].vpos as usize, pos);
            assert!(t.entries[idx as usize].has_expire());
        }
        assert_eq!(
            t.volatile_len(),
            (0..1000).filter(|i| i % 3 == 0 && i % 2 == 1).count()
        );
    }

    #[test]
    fn scan_returns_every_stable_key_despite_deletes() {
        let mut t = Table::new();
        for i in 0..500 {
            t.upsert(format!("k{i}").as_bytes(), v("x"), 0);
        }
        let mut seen = HashSet::new();
        let mut cursor = 0;
        let mut deleted = HashSet::new();
        let mut round = 0;
        loop {
            cursor = t.scan(cursor, 7, |e| {
                seen.insert(e.key.as_bytes().to_vec());
            });
            // Delete a few keys between steps, like concurrent clients would.
            round += 1;
            let victim = format!("k{}", (round * 37) % 500);
            if t.remove(victim.as_bytes()).is_some() {
                deleted.insert(victim.into_bytes());
            }
            if cursor == 0 {
                break;
            }
        }
        for i in 0..500 {
            let k = format!("k{i}").into_bytes();
            if !deleted.contains(&k) {
                assert!(
                    seen.contains(&k),
                    "missed {:?}",
                    String::from_utf8_lossy(&k)
                );
            }
        }
    }
}
