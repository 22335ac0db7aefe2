//! Client-side caching (`CLIENT TRACKING`), Redis's `tracking.c`, one
//! table per tenant.
//!
//! A tracking client's reads are remembered: the key, and which clients
//! read it (the keys are the tenant's, whatever the database, as Redis
//! keys its table by name alone). When a key changes (any write that is
//! logged, an expiry, an eviction) every client that read it since its
//! last change gets an invalidation message and is forgotten for that key
//! until it reads it again. A client in broadcast mode (`BCAST`) is not
//! remembered per key: it names prefixes, and gets every changed key
//! under them, a batch at a time (at the end of the batch of commands
//! that changed them, Redis's "before sleep").
//!
//! Messages are RESP3 pushes (`invalidate [keys]`) to the client, or go
//! to the client it redirects to: a RESP3 one gets the same push, a RESP2
//! one subscribed to anything a Pub/Sub message on `__redis__:invalidate`.
//! An invalidation for the client whose command is running is sent after
//! that command's reply, as Redis sends it.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use hashbrown::{HashMap, HashSet};

use crate::client::ClientInfo;
use crate::resp::Reply;
use crate::tenant::Tenant;

/// A client's tracking mode (`CLIENT TRACKING ON ...`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mode {
    pub bcast: bool,
    pub optin: bool,
    pub optout: bool,
    pub noloop: bool,
    /// The client id invalidations go to (0: the client itself).
    pub redirect: u64,
    /// The redirect's client went away.
    pub broken: bool,
    /// BCAST prefixes, sorted ("" when none was given).
    pub prefixes: Vec<Vec<u8>>,
}

/// A BCAST prefix: who listens, and the keys under it changed since the
/// last broadcast with who changed each (for NOLOOP).
#[derive(Default)]
struct Prefix {
    clients: BTreeSet<u64>,
    keys: BTreeMap<Vec<u8>, u64>,
}

/// A tenant's tracking table.
#[derive(Default)]
pub struct Tracking {
    /// Keys read by tracking clients → those clients' ids.
    keys: HashMap<Vec<u8>, HashSet<u64>>,
    /// Client ids over all keys (INFO `tracking_total_items`).
    items: u64,
    prefixes: BTreeMap<Vec<u8>, Prefix>,
    /// Clients with tracking on (INFO `tracking_clients`).
    pub clients: u64,
    /// The client whose command is running (0: none: a replica's stream,
    /// the log's replay, expiry).
    pub current: u64,
    /// Invalidations for `current`, sent after its reply (None: a flush).
    pending_self: Vec<Option<Vec<u8>>>,
}

/// `__redis__:invalidate`, the channel RESP2 redirects get messages on.
pub const CHANNEL: &[u8] = b"__redis__:invalidate";

impl Tracking {
    /// Whether a change to a key can concern anyone.
    #[inline]
    pub fn active(&self) -> bool {
        !self.keys.is_empty() || !self.prefixes.is_empty() || self.clients > 0
    }

    pub fn total_keys(&self) -> usize {
        self.keys.len()
    }

    pub fn total_items(&self) -> u64 {
        self.items
    }

    pub fn total_prefixes(&self) -> usize {
        self.prefixes.len()
    }

    /// Remembers that client `id` read `key`.
    pub fn remember(&mut self, id: u64, key: &[u8]) {
        let ids = match self.keys.get_mut(key) {
            Some(ids) => ids,
            None => self.keys.entry(key.to_vec()).or_default(),
        };
        if ids.insert(id) {
            self.items += 1;
        }
    }

    /// Starts broadcasting `prefixes` to client `id`.
    fn listen(&mut self, id: u64, prefixes: &[Vec<u8>]) {
        for p in prefixes {
            self.prefixes
                .entry(p.clone())
                .or_default()
                .clients
                .insert(id);
        }
    }

    /// Stops broadcasting `prefixes` to client `id`; a prefix nobody
    /// listens to goes.
    fn unlisten(&mut self, id: u64, prefixes: &[Vec<u8>]) {
        for p in prefixes {
            if let Some(pf) = self.prefixes.get_mut(p) {
                pf.clients.remove(&id);
                if pf.clients.is_empty() {
                    self.prefixes.remove(p);
                }
            }
        }
    }
}

/// The client `id` of the tenant, if connected.
fn client(t: &Tenant, id: u64) -> Option<Rc<ClientInfo>> {
    t.clients.get(&id).cloned()
}

/// Turns tracking on for `c` with `mode` (its options already checked
/// against its current mode).
pub fn enable(t: &mut Tenant, c: &ClientInfo, mut mode: Mode) {
    let old = c.tracking.borrow_mut().take();
    match &old {
        Some(o) => {
            if o.bcast {
                t.tracking.unlisten(c.id, &o.prefixes);
            }
        }
        None => t.tracking.clients += 1,
    }
    if mode.bcast {
        // Prefixes add up over calls; none at all means every key.
        let mut all: Vec<Vec<u8>> = old.map(|o| o.prefixes).unwrap_or_default();
        all.extend(mode.prefixes);
        if all.is_empty() {
            all.push(Vec::new());
        }
        all.sort();
        all.dedup();
        mode.prefixes = all;
        t.tracking.listen(c.id, &mode.prefixes);
    }
    *c.tracking.borrow_mut() = Some(mode);
}

/// Turns tracking off for `c` (OFF, RESET, disconnection). Its entries
/// in the key table are dropped lazily, when those keys change.
pub fn disable(t: &mut Tenant, c: &ClientInfo) {
    let Some(old) = c.tracking.borrow_mut().take() else {
        return;
    };
    if old.bcast {
        t.tracking.unlisten(c.id, &old.prefixes);
    }
    t.tracking.clients = t.tracking.clients.saturating_sub(1);
    c.caching.set(false);
}

/// After a read-only command `keys` of which were read by client `c`
/// (the caller of a script for its calls): remembered unless `c` does
/// not track, broadcasts, or opted out of this one (OPTIN without
/// `CLIENT CACHING yes`, OPTOUT with `CLIENT CACHING no`).
pub fn after_read<'a>(t: &mut Tenant, c: &ClientInfo, keys: impl Iterator<Item = &'a [u8]>) {
    let id = c.id;
    let take = match &*c.tracking.borrow() {
        None => false,
        Some(m) if m.bcast => false,
        Some(m) => {
            let caching = c.caching.get();
            !((m.optin && !caching) || (m.optout && caching))
        }
    };
    if take {
        for k in keys {
            t.tracking.remember(id, k);
        }
    }
}

/// The invalidation message for `keys` (an array of them; None: all, a
/// flush) as client `resp` reads it: a push, or a Pub/Sub message when
/// `pubsub` (a RESP2 redirect).
fn message(resp: u8, pubsub: bool, keys: Option<&[&[u8]]>, null_resp: u8) -> Vec<u8> {
    let mut r = Reply::new(resp);
    if pubsub {
        r.array(3);
        r.bulk(b"message");
        r.bulk(CHANNEL);
    } else {
        r.push(2);
        r.bulk(b"invalidate");
    }
    match keys {
        Some(keys) => {
            r.array(keys.len());
            for k in keys {
                r.bulk(k);
            }
        }
        // (The null is written in the tracking client's own protocol, as
        // Redis does.)
        None => r.raw(if null_resp >= 3 { b"_\r\n" } else { b"$-1\r\n" }),
    }
    r.buf.to_vec()
}

/// Where client `c`'s invalidations go and in what form: the client to
/// write to and the bytes, or None (a RESP2 client without a subscribed
/// redirect gets nothing). A redirect that is gone marks `c` broken and
/// tells it so (RESP3 only).
fn route(t: &Tenant, c: &ClientInfo, keys: Option<&[&[u8]]>) -> Option<(Rc<ClientInfo>, Vec<u8>)> {
    let redirect = c.tracking.borrow().as_ref().map_or(0, |m| m.redirect);
    let own_resp = c.resp.get();
    if redirect != 0 {
        let Some(target) = client(t, redirect).filter(|r| !r.killed.get()) else {
            if let Some(m) = c.tracking.borrow_mut().as_mut() {
                m.broken = true;
            }
            let me = client(t, c.id)?;
            if own_resp < 3 {
                return None;
            }
            let mut r = Reply::new(3);
            r.push(2);
            r.bulk(b"tracking-redir-broken");
            r.int(redirect as i64);
            return Some((me, r.buf.to_vec()));
        };
        let resp = target.resp.get();
        if resp >= 3 {
            return Some((target, message(3, false, keys, own_resp)));
        }
        let subscribed = target.subs.get() + target.psubs.get() + target.ssubs.get() > 0;
        if subscribed {
            return Some((target, message(2, true, keys, own_resp)));
        }
        return None;
    }
    if own_resp < 3 {
        return None;
    }
    Some((client(t, c.id)?, message(3, false, keys, own_resp)))
}

/// Sends client `c` an invalidation of `keys` (None: a flush).
fn send(t: &Tenant, c: &ClientInfo, keys: Option<&[&[u8]]>) {
    if let Some((to, bytes)) = route(t, c, keys) {
        if !to.killed.get() {
            to.push_bytes(&bytes);
        }
    }
}

/// `key` changed (tenant-wide: any database). Its readers are told and
/// forgotten; BCAST prefixes over it collect it.
pub fn key_changed(t: &mut Tenant, key: &[u8]) {
    let current = t.tracking.current;
    if !t.tracking.prefixes.is_empty() {
        for (p, pf) in t.tracking.prefixes.iter_mut() {
            if key.starts_with(p) {
                pf.keys.insert(key.to_vec(), current);
            }
        }
    }
    let Some(ids) = t.tracking.keys.remove(key) else {
        return;
    };
    t.tracking.items = t.tracking.items.saturating_sub(ids.len() as u64);
    let mut ids: Vec<u64> = ids.into_iter().collect();
    ids.sort_unstable();
    for id in ids {
        let Some(c) = client(t, id) else {
            continue;
        };
        let (on, noloop) = match &*c.tracking.borrow() {
            Some(m) if !m.bcast => (true, m.noloop),
            _ => (false, false),
        };
        if !on || (noloop && id == current) {
            continue;
        }
        if id == current {
            t.tracking.pending_self.push(Some(key.to_vec()));
        } else {
            send(t, &c, Some(&[key]));
        }
    }
}

/// A flush (FLUSHALL or FLUSHDB: the table knows no databases): every
/// tracking client is told all its keys are invalid, and the table
/// empties (Redis's `trackingInvalidateKeysOnFlush`).
pub fn flushed(t: &mut Tenant) {
    if t.tracking.clients > 0 {
        let current = t.tracking.current;
        let tracking: Vec<Rc<ClientInfo>> = t
            .clients
            .values()
            .filter(|c| c.tracking.borrow().is_some())
            .cloned()
            .collect();
        for c in tracking {
            if c.id == current {
                t.tracking.pending_self.push(None);
            } else {
                send(t, &c, None);
            }
        }
    }
    t.tracking.keys.clear();
    t.tracking.items = 0;
}

/// After a command of client `c` (at the top level: EXEC's and scripts'
/// inner commands wait for theirs): its own invalidations, after its
/// reply in `out` (or to its redirect).
pub fn after_command(t: &mut Tenant, c: &ClientInfo, out: &mut Reply) {
    if t.tracking.pending_self.is_empty() {
        return;
    }
    let pending = std::mem::take(&mut t.tracking.pending_self);
    for key in pending {
        let keys: Option<[&[u8]; 1]> = key.as_deref().map(|k| [k]);
        let Some((to, bytes)) = route(t, c, keys.as_ref().map(|k| &k[..])) else {
            continue;
        };
        if to.id == c.id {
            out.raw(&bytes);
        } else if !to.killed.get() {
            to.push_bytes(&bytes);
        }
    }
}

/// Sends each BCAST prefix's changed keys to its clients (without, for a
/// NOLOOP client, the keys it changed itself), and keeps the key table
/// within `max_keys` (0: no limit) by invalidating keys as Redis does
/// when it is over. At the end of a batch of commands, and in the cron.
pub fn housekeeping(t: &mut Tenant, max_keys: u64) {
    if t.tracking.prefixes.values().any(|p| !p.keys.is_empty()) {
        // (Per prefix: its clients, and the keys with who changed each.)
        type Batch = (Vec<u64>, Vec<(Vec<u8>, u64)>);
        let mut batches: Vec<Batch> = Vec::new();
        for pf in t.tracking.prefixes.values_mut() {
            if pf.keys.is_empty() {
                continue;
            }
            let keys = std::mem::take(&mut pf.keys).into_iter().collect();
            batches.push((pf.clients.iter().copied().collect(), keys));
        }
        for (clients, keys) in batches {
            for id in clients {
                let Some(c) = client(t, id) else {
                    continue;
                };
                let noloop = c.tracking.borrow().as_ref().is_some_and(|m| m.noloop);
                let list: Vec<&[u8]> = keys
                    .iter()
                    .filter(|(_, by)| !(noloop && *by == id))
                    .map(|(k, _)| k.as_slice())
                    .collect();
                if !list.is_empty() {
                    send(t, &c, Some(&list));
                }
            }
        }
    }
    if max_keys > 0 {
        let saved = std::mem::replace(&mut t.tracking.current, 0);
        // (As Redis: at most a bounded effort per call, the rest later.)
        let mut effort = 100usize;
        while t.tracking.keys.len() as u64 > max_keys && effort > 0 {
            let Some(k) = t.tracking.keys.keys().next().cloned() else {
                break;
            };
            key_changed(t, &k);
            effort -= 1;
        }
        t.tracking.current = saved;
    }
}

/// Whether two prefixes overlap (one starts the other).
pub fn overlap(a: &[u8], b: &[u8]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembering_counts_items_once_per_client_and_key() {
        let mut t = Tracking::default();
        t.remember(1, b"a");
        t.remember(1, b"a");
        t.remember(2, b"a");
        t.remember(2, b"b");
        assert_eq!((t.total_keys(), t.total_items()), (2, 3));
        assert!(t.active());
    }

    #[test]
    fn messages_take_redis_shapes() {
        assert_eq!(
            message(3, false, Some(&[b"k"]), 3),
            b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n"
        );
        assert_eq!(
            message(3, false, None, 3),
            b">2\r\n$10\r\ninvalidate\r\n_\r\n"
        );
        assert_eq!(
            message(2, true, Some(&[b"a", b"b"]), 2),
            b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n"
        );
        assert!(overlap(b"ab", b"a") && overlap(b"", b"x") && !overlap(b"ab", b"ac"));
    }
}
