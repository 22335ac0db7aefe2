//! Consumer groups (XGROUP, XREADGROUP, XACK, XCLAIM...), as Redis 7.0
//! keeps them: a group has the last id it delivered, how many entries it
//! has read (for XINFO's lag), its pending entries list (PEL: the ids
//! delivered and not acknowledged, with their owner, last delivery time
//! and delivery count) and its consumers, each with its own PEL (the
//! ids it owns) and the last time it was seen.
//!
//! Groups and consumers are ordered by name, pending entries by id, as
//! Redis's radix trees order them: XINFO, XPENDING and RDB files list them
//! in that order.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{Stream, StreamId};

/// A consumer's name, shared by its pending entries.
pub type Name = Arc<[u8]>;

/// `entries_read` when the group cannot know how many entries it read
/// (Redis's `SCG_INVALID_ENTRIES_READ`).
pub const ENTRIES_READ_UNKNOWN: i64 = -1;

/// A delivered entry not yet acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nack {
    /// When it was last delivered (Unix ms).
    pub delivery_time: i64,
    pub delivery_count: u64,
    pub consumer: Name,
}

/// A consumer of a group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Consumer {
    /// When it last read or claimed (Unix ms).
    pub seen_time: i64,
    /// The ids it owns (each in the group's PEL with this consumer).
    pub pel: BTreeSet<StreamId>,
}

/// A consumer group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// The last id delivered to a consumer (`>` reads after it).
    pub last_id: StreamId,
    /// Entries read so far (the logical position of `last_id`), or
    /// [`ENTRIES_READ_UNKNOWN`].
    pub entries_read: i64,
    pub pel: BTreeMap<StreamId, Nack>,
    pub consumers: BTreeMap<Name, Consumer>,
}

impl Group {
    pub fn new(last_id: StreamId, entries_read: i64) -> Group {
        Group {
            last_id,
            entries_read,
            pel: BTreeMap::new(),
            consumers: BTreeMap::new(),
        }
    }

    /// The consumer `name`, made if missing (seen now); whether it was.
    pub fn consumer_or_create(&mut self, name: &[u8], now: i64) -> (&mut Consumer, bool) {
        if self.consumers.contains_key(name) {
            // (Checked above.)
            let c = self.consumers.get_mut(name).expect("consumer present");
            return (c, false);
        }
        let c = self.consumers.entry(Arc::from(name)).or_insert(Consumer {
            seen_time: now,
            pel: BTreeSet::new(),
        });
        (c, true)
    }

    /// The name `name` as the consumers map holds it (shared with PELs).
    pub fn name_of(&self, name: &[u8]) -> Option<Name> {
        self.consumers.get_key_value(name).map(|(k, _)| k.clone())
    }

    /// Gives `id` to `consumer` (which must exist): a new pending entry,
    /// or one taken from its owner. The delivery time and count are set.
    pub fn assign(&mut self, id: StreamId, consumer: &[u8], time: i64, count: u64) {
        if let Some(name) = self.name_of(consumer) {
            self.assign_named(id, &name, time, count);
        }
    }

    /// [`Group::assign`] to the consumer named `name` (as the consumers
    /// map holds it).
    pub fn assign_named(&mut self, id: StreamId, name: &Name, time: i64, count: u64) {
        use std::collections::btree_map::Entry;
        match self.pel.entry(id) {
            Entry::Vacant(v) => {
                v.insert(Nack {
                    delivery_time: time,
                    delivery_count: count,
                    consumer: name.clone(),
                });
            }
            Entry::Occupied(mut o) => {
                let n = o.get_mut();
                if !Arc::ptr_eq(&n.consumer, name) && n.consumer != *name {
                    let old = std::mem::replace(&mut n.consumer, name.clone());
                    if let Some(c) = self.consumers.get_mut(&old) {
                        c.pel.remove(&id);
                    }
                }
                n.delivery_time = time;
                n.delivery_count = count;
            }
        }
        if let Some(c) = self.consumers.get_mut(name) {
            c.pel.insert(id);
        }
    }

    /// Acknowledges `id`: true if it was pending.
    pub fn ack(&mut self, id: StreamId) -> bool {
        let Some(n) = self.pel.remove(&id) else {
            return false;
        };
        if let Some(c) = self.consumers.get_mut(&n.consumer) {
            c.pel.remove(&id);
        }
        true
    }

    /// Deletes the consumer `name` and its pending entries: how many it
    /// had (None: no such consumer).
    pub fn delete_consumer(&mut self, name: &[u8]) -> Option<usize> {
        let c = self.consumers.remove(name)?;
        for id in &c.pel {
            self.pel.remove(id);
        }
        Some(c.pel.len())
    }

    /// Bytes the group takes (memory accounting): its tree nodes and
    /// names, roughly as Redis's radix trees and NACKs do.
    pub fn allocated(&self) -> usize {
        let nacks = self.pel.len() * (16 + 40);
        let consumers: usize = self
            .consumers
            .iter()
            .map(|(n, c)| 48 + n.len() + c.pel.len() * 16)
            .sum();
        64 + nacks + consumers
    }

    /// Checks what a file or payload said: every consumer's pending
    /// entry is in the group's PEL with that consumer as its owner, and
    /// every entry in the group's PEL has an owner that lists it.
    pub fn check(&self) -> Result<(), &'static str> {
        let mut owned = 0usize;
        for (name, c) in &self.consumers {
            for id in &c.pel {
                match self.pel.get(id) {
                    Some(n) if n.consumer == *name => owned += 1,
                    _ => return Err("a consumer's pending entry is not the group's"),
                }
            }
        }
        if owned != self.pel.len() {
            return Err("a group's pending entry has no consumer");
        }
        Ok(())
    }
}

/// What a stream's counters say about where a group is (copied out of
/// the stream, so a group can move while these are read).
#[derive(Clone, Copy, Debug)]
pub struct Counts {
    pub entries_added: u64,
    pub length: u64,
    pub last_id: StreamId,
    pub first_id: StreamId,
    pub max_deleted: StreamId,
}

impl Counts {
    /// How many entries were added up to and including `id`, as far as
    /// the stream can tell (Redis's
    /// `streamEstimateDistanceFromFirstEverEntry`): exact unless entries
    /// were deleted in the middle, [`ENTRIES_READ_UNKNOWN`] then.
    pub fn entries_up_to(&self, id: StreamId) -> i64 {
        let added = self.entries_added as i64;
        if self.entries_added == 0 {
            return 0;
        }
        if self.length == 0 && id <= self.last_id {
            return added;
        }
        if id == self.last_id {
            return added;
        }
        if id > self.last_id {
            return ENTRIES_READ_UNKNOWN;
        }
        // No deletion inside the stream (only trims from its front): the
        // live entries are the last ones added.
        if self.max_deleted == StreamId::MIN || self.max_deleted < self.first_id {
            if id < self.first_id {
                return added.wrapping_sub(self.length as i64);
            }
            if id == self.first_id {
                return added.wrapping_sub(self.length as i64).wrapping_add(1);
            }
        }
        ENTRIES_READ_UNKNOWN
    }

    /// Whether an entry from `start` on may have been deleted (Redis's
    /// `streamRangeHasTombstones` with no end).
    pub fn tombstones_from(&self, start: StreamId) -> bool {
        if self.length == 0 || self.max_deleted == StreamId::MIN {
            return false;
        }
        // (Deleted entries all below the first live one are no gap.)
        if self.first_id > self.max_deleted {
            return false;
        }
        start <= self.max_deleted
    }

    /// A group's lag: entries added it has not read, if known. The
    /// arithmetic wraps, as Redis's signed subtraction does once XSETID
    /// ENTRIESADDED set the count near `i64::MAX` and XADD went past it.
    pub fn lag(&self, g: &Group) -> Option<i64> {
        let added = self.entries_added as i64;
        if self.entries_added == 0 {
            return Some(0);
        }
        if g.entries_read != ENTRIES_READ_UNKNOWN && !self.tombstones_from(g.last_id) {
            return Some(added.wrapping_sub(g.entries_read));
        }
        let read = self.entries_up_to(g.last_id);
        (read != ENTRIES_READ_UNKNOWN).then(|| added.wrapping_sub(read))
    }

    /// Moves group `g` to `id` as a delivery of entry `id` does (nothing
    /// if it is past it), counting the entry read when the count is
    /// known; whether it moved.
    pub fn advance(&self, g: &mut Group, id: StreamId) -> bool {
        if id <= g.last_id {
            return false;
        }
        if g.entries_read != ENTRIES_READ_UNKNOWN && !self.tombstones_from(id) {
            g.entries_read = g.entries_read.saturating_add(1);
        } else if self.entries_added > 0 {
            g.entries_read = self.entries_up_to(id);
        }
        g.last_id = id;
        true
    }
}

impl Stream {
    /// Whether a live entry `id` is in the stream.
    pub fn contains(&self, id: StreamId) -> bool {
        let mut found = false;
        self.range(id, id, false, |_, _| {
            found = true;
            false
        });
        found
    }

    pub fn counts(&self) -> Counts {
        Counts {
            entries_added: self.entries_added,
            length: self.length,
            last_id: self.last_id,
            first_id: self.first_id,
            max_deleted: self.max_deleted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::stream::NodeLimits;

    fn stream(n: u64) -> Stream {
        let mut s = Stream::new();
        for i in 1..=n {
            s.append(StreamId::new(i, 0), &[b"f", b"v"], NodeLimits::default())
                .expect("append");
        }
        s
    }

    #[test]
    fn lag_is_exact_until_an_entry_in_the_middle_is_deleted() {
        let mut s = stream(5);
        let mut g = Group::new(StreamId::MIN, 0);
        assert_eq!(s.counts().lag(&g), Some(5));
        for i in 1..=2 {
            assert!(s.counts().advance(&mut g, StreamId::new(i, 0)));
        }
        assert!(!s.counts().advance(&mut g, StreamId::new(1, 0)));
        assert_eq!((g.entries_read, s.counts().lag(&g)), (2, Some(3)));
        // A deletion after the group's position: unknown until it reads
        // past it.
        assert_eq!(s.xdel(&[StreamId::new(4, 0)]), 1);
        assert_eq!(s.counts().lag(&g), None);
        // Reading 3-0 before the gap: the count is lost; reading the last
        // entry: it is every entry added.
        s.counts().advance(&mut g, StreamId::new(3, 0));
        assert_eq!((g.entries_read, s.counts().lag(&g)), (-1, None));
        s.counts().advance(&mut g, StreamId::new(5, 0));
        assert_eq!((g.entries_read, s.counts().lag(&g)), (5, Some(0)));
    }

    #[test]
    fn lag_wraps_as_redis_when_entries_added_passed_i64_max() {
        // XSETID ... ENTRIESADDED 9223372036854775807, then three XADDs:
        // redis-server 7.0 reports lag 9223372036854775800 for a group
        // that read 10 (its signed subtraction wraps).
        let mut s = stream(5);
        s.entries_added = i64::MAX as u64 + 3;
        let g = Group::new(StreamId::new(5, 0), 10);
        assert_eq!(s.counts().lag(&g), Some(9_223_372_036_854_775_800));
        let g = Group::new(StreamId::new(1, 0), ENTRIES_READ_UNKNOWN);
        assert!(s.counts().lag(&g).is_some());
    }

    #[test]
    fn deleting_a_consumer_drops_its_pending_entries() {
        let mut g = Group::new(StreamId::MIN, 0);
        g.consumer_or_create(b"a", 1);
        g.consumer_or_create(b"b", 1);
        g.assign(StreamId::new(1, 0), b"a", 5, 1);
        g.assign(StreamId::new(2, 0), b"a", 5, 1);
        g.assign(StreamId::new(3, 0), b"b", 5, 1);
        // Taken over by b.
        g.assign(StreamId::new(2, 0), b"b", 6, 2);
        assert_eq!(g.check(), Ok(()));
        assert_eq!(g.delete_consumer(b"a"), Some(1));
        assert_eq!(g.pel.len(), 2);
        assert_eq!(g.check(), Ok(()));
        assert!(g.ack(StreamId::new(2, 0)));
        assert!(!g.ack(StreamId::new(2, 0)));
        assert_eq!(g.consumers[&b"b"[..]].pel.len(), 1);
    }
}
