//! Blocked clients (BLPOP and friends), Redis's `blocked.c`.
//!
//! A blocking command that finds no data registers the client here and its
//! connection task waits. When a write touches a key someone waits on
//! (`Tenant::record` marks it ready), the dispatcher calls [`serve_ready`]
//! right after that command — before any other client's command — and the
//! waiters are served in the order they blocked (Redis's fairness), each by
//! re-running its command against that key on its behalf. The reply goes to
//! the waiter's push queue and wakes its task.

use std::rc::Rc;

use crate::client::{ClientInfo, Session};
use crate::cmd::blocking::Waiter;
use crate::cmd::{lookup, Ctx, Lookup};
use crate::resp::Reply;
use crate::shared::{Settings, Shared};
use crate::tenant::Tenant;

/// A client waiting in a blocking command.
pub struct Blocked {
    pub info: Rc<ClientInfo>,
    pub db: usize,
    pub resp: u8,
    /// The command as sent (re-run on its behalf when a key is ready).
    pub args: Vec<Vec<u8>>,
    pub keys: Vec<Vec<u8>>,
}

/// How a blocking command serves one ready key on behalf of a waiter:
/// `Some(true)` if it consumed data and replied, `Some(false)` if the key
/// still has nothing for it.
pub type ServeFn = fn(&mut Ctx, key: &[u8]) -> bool;

/// Registers `info` as blocked on `keys` (in the session's DB).
pub fn block(t: &mut Tenant, s: &Session, args: &[&[u8]], keys: Vec<Vec<u8>>) {
    let id = s.info.id;
    for k in &keys {
        let q = t.blocked_keys.entry((s.db, k.clone())).or_default();
        if !q.contains(&id) {
            q.push_back(id);
        }
    }
    t.blocked.insert(
        id,
        Blocked {
            info: s.info.clone(),
            db: s.db,
            resp: s.resp,
            args: args.iter().map(|a| a.to_vec()).collect(),
            keys,
        },
    );
}

/// Forgets a blocked client (served, timed out, unblocked, disconnected).
pub fn unblock(t: &mut Tenant, id: u64) -> Option<Blocked> {
    let b = t.blocked.remove(&id)?;
    for k in &b.keys {
        let slot = (b.db, k.clone());
        if let Some(q) = t.blocked_keys.get_mut(&slot) {
            q.retain(|x| *x != id);
            if q.is_empty() {
                t.blocked_keys.remove(&slot);
            }
        }
    }
    Some(b)
}

/// Serves clients blocked on keys that became ready, FIFO per key.
pub fn serve_ready(t: &mut Tenant, shared: &Shared, set: &Settings, now_ms: i64) {
    let mut guard = 0;
    while !t.ready_keys.is_empty() {
        // Serving can make more keys ready (BLMOVE pushes elsewhere); the
        // guard bounds pathological ping-pong between waiters.
        guard += 1;
        if guard > 100_000 {
            t.ready_keys.clear();
            break;
        }
        let (db, key) = t.ready_keys.remove(0);
        let slot = (db, key.clone());
        let mut skipped: Vec<u64> = Vec::new();
        while let Some(id) = t.blocked_keys.get(&slot).and_then(|q| q.front().copied()) {
            let Some(b) = t.blocked.get(&id) else {
                // Stale queue entry: drop it.
                if let Some(q) = t.blocked_keys.get_mut(&slot) {
                    q.pop_front();
                }
                continue;
            };
            let (info, bdb, resp, args) = (b.info.clone(), b.db, b.resp, b.args.clone());
            let argv: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
            let w = waiter_of(&argv);
            let served = w.is_some_and(|(w, spec)| {
                serve_one(
                    t, shared, set, now_ms, &info, bdb, resp, &argv, &key, w, spec,
                )
            });
            if !served {
                // A pop that found nothing leaves nothing for those after
                // it. A waiter that takes nothing (a stream reader waiting
                // past a later id) does not hold them up, nor does one
                // for another type than the key now holds.
                if w.is_some_and(|(w, _)| !w.consumes || !key_holds(t, bdb, &key, w.kind)) {
                    skipped.push(id);
                    if let Some(q) = t.blocked_keys.get_mut(&slot) {
                        q.retain(|x| *x != id);
                    }
                    continue;
                }
                break;
            }
            unblock(t, id);
        }
        // The readers passed over wait on, in their order.
        if !skipped.is_empty() {
            let q = t.blocked_keys.entry(slot).or_default();
            for id in skipped.into_iter().rev() {
                q.push_front(id);
            }
        }
    }
}

/// The blocking command `argv` names, and its table row.
fn waiter_of(argv: &[&[u8]]) -> Option<(Waiter, &'static crate::cmd::CommandSpec)> {
    let Lookup::Found(r) = lookup(argv) else {
        return None;
    };
    Some((crate::cmd::blocking::waiter(&r.fullname)?, r.spec))
}

/// Whether `key` holds a `kind` (or is missing).
fn key_holds(t: &Tenant, db: usize, key: &[u8], kind: crate::db::Kind) -> bool {
    t.ks.dbs
        .get(db)
        .and_then(|d| d.find(key).map(|i| d.entry(i).value.kind()))
        .is_none_or(|k| k == kind)
}

/// Runs a waiter's command `argv` (the blocking command `w`, row `spec`)
/// against `key`; true if it was served.
#[allow(clippy::too_many_arguments)]
fn serve_one(
    t: &mut Tenant,
    shared: &Shared,
    set: &Settings,
    now_ms: i64,
    info: &Rc<ClientInfo>,
    db: usize,
    resp: u8,
    argv: &[&[u8]],
    key: &[u8],
    w: Waiter,
    spec: &'static crate::cmd::CommandSpec,
) -> bool {
    let mut s = Session::new(info.clone(), true);
    s.db = db;
    s.resp = resp;
    let mut out = Reply::new(resp);
    let mut ctx = Ctx {
        args: argv,
        out: &mut out,
        t,
        s: &mut s,
        shared,
        set,
        now_ms,
        spec,
        failed: false,
        suspend: None,
    };
    if !(w.serve)(&mut ctx, key) {
        return false;
    }
    info.push_bytes(&out.buf);
    info.unblocked.set(true);
    true
}
