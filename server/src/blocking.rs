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
            if !serve_one(t, shared, set, now_ms, &info, bdb, resp, &args, &key) {
                // A pop that found nothing leaves nothing for those after
                // it; a stream read takes nothing, and a reader waiting
                // past a later id does not hold up the others; nor does a
                // waiter for another type than the key now holds.
                let xread = args
                    .first()
                    .is_some_and(|a| a.eq_ignore_ascii_case(b"xread"));
                if xread || !waits_for_type_of(t, bdb, &key, &args) {
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

/// Whether the waiter's command is one for the type `key` holds (or the
/// key is missing).
fn waits_for_type_of(t: &Tenant, db: usize, key: &[u8], args: &[Vec<u8>]) -> bool {
    use crate::db::Kind;
    let Some(kind) =
        t.ks.dbs
            .get(db)
            .and_then(|d| d.find(key).map(|i| d.entry(i).value.kind()))
    else {
        return true;
    };
    let name = args
        .first()
        .map(|a| a.to_ascii_lowercase())
        .unwrap_or_default();
    let wants = match &name[..] {
        b"bzpopmin" | b"bzpopmax" | b"bzmpop" => Kind::ZSet,
        b"xread" => Kind::Stream,
        _ => Kind::List,
    };
    kind == wants
}

/// Runs a waiter's command against `key`; true if it was served.
#[allow(clippy::too_many_arguments)]
fn serve_one(
    t: &mut Tenant,
    shared: &Shared,
    set: &Settings,
    now_ms: i64,
    info: &Rc<ClientInfo>,
    db: usize,
    resp: u8,
    args: &[Vec<u8>],
    key: &[u8],
) -> bool {
    let argv: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
    let Lookup::Found(r) = lookup(&argv) else {
        return false;
    };
    let Some(serve) = crate::cmd::blocking::serve_fn(&r.fullname) else {
        return false;
    };
    let mut s = Session::new(info.clone(), true);
    s.db = db;
    s.resp = resp;
    let mut out = Reply::new(resp);
    let mut ctx = Ctx {
        args: &argv,
        out: &mut out,
        t,
        s: &mut s,
        shared,
        set,
        now_ms,
        spec: r.spec,
        failed: false,
        suspend: None,
    };
    if !serve(&mut ctx, key) {
        return false;
    }
    info.push_bytes(&out.buf);
    info.unblocked.set(true);
    true
}
