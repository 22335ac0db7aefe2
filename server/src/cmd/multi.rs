//! Transactions: MULTI, EXEC, DISCARD, WATCH, UNWATCH.
//!
//! A tenant's commands all run on its executor thread, so EXEC is atomic by
//! construction: the queued commands run back to back. WATCH is optimistic
//! locking fed by the propagation log: every write effect names the keys it
//! changed (`Tenant::record`), which flags the clients watching them.

use super::Ctx;
use crate::client::Session;
use crate::tenant::Tenant;

pub fn multi(ctx: &mut Ctx) {
    if ctx.s.multi.is_some() {
        return ctx.err("MULTI calls can not be nested");
    }
    ctx.s.multi = Some(Vec::new());
    ctx.s.multi_error = false;
    ctx.s.info.multi_len.set(0);
    ctx.out.ok();
}

pub fn discard(ctx: &mut Ctx) {
    if ctx.s.multi.take().is_none() {
        return ctx.err("DISCARD without MULTI");
    }
    ctx.s.multi_error = false;
    ctx.s.info.multi_len.set(-1);
    unwatch_all(ctx.t, ctx.s);
    ctx.out.ok();
}

/// True if a watched key that was alive when watched is now logically
/// expired (Redis's `isWatchedKeyExpired`): an expiry is a modification.
fn watched_key_expired(ctx: &mut Ctx) -> bool {
    let now = ctx.now_ms;
    ctx.s.watched.iter().any(|(db, key, expired_then)| {
        !expired_then
            && ctx.t.ks.dbs[*db]
                .find(key)
                .map(|i| ctx.t.ks.dbs[*db].entry(i))
                .is_some_and(|e| e.has_expire() && e.expire_at <= now)
    })
}

pub fn exec(ctx: &mut Ctx) {
    let Some(queue) = ctx.s.multi.take() else {
        return ctx.err("EXEC without MULTI");
    };
    ctx.s.info.multi_len.set(-1);
    if std::mem::take(&mut ctx.s.multi_error) {
        unwatch_all(ctx.t, ctx.s);
        return ctx.error("EXECABORT Transaction discarded because of previous errors.");
    }
    if ctx.s.info.dirty_cas.get() || watched_key_expired(ctx) {
        unwatch_all(ctx.t, ctx.s);
        return ctx.out.null_array();
    }
    // Keys are unwatched before running, as Redis does.
    unwatch_all(ctx.t, ctx.s);
    ctx.out.array(queue.len());
    ctx.t.log.begin_tx();
    ctx.s.in_exec = true;
    for cmd in &queue {
        let args: Vec<&[u8]> = cmd.iter().map(|a| a.as_slice()).collect();
        // Outcomes other than Continue cannot arise here: QUIT is never
        // queued and blocking commands do not block inside EXEC.
        let _ = crate::dispatch::run(
            ctx.t, ctx.s, ctx.shared, ctx.set, &args, ctx.out, ctx.now_ms,
        );
    }
    ctx.s.in_exec = false;
    ctx.t.log.commit_tx();
}

pub fn watch(ctx: &mut Ctx) {
    if ctx.s.multi.is_some() {
        return ctx.err("WATCH inside MULTI is not allowed");
    }
    watch_keys(ctx.t, ctx.s, &ctx.args[1..], ctx.now_ms);
    ctx.out.ok();
}

/// Watches `keys` of the session's database (WATCH; one answered while
/// a script held the database, registered once it is free).
pub fn watch_keys(t: &mut Tenant, s: &mut Session, keys: &[&[u8]], now: i64) {
    let db = s.db;
    for &key in keys {
        if s.watched.iter().any(|(d, k, _)| *d == db && k == key) {
            continue;
        }
        let expired = t.ks.dbs[db]
            .find(key)
            .map(|i| t.ks.dbs[db].entry(i))
            .is_some_and(|e| e.has_expire() && e.expire_at <= now);
        s.watched.push((db, key.to_vec(), expired));
        t.watched
            .entry((db, key.to_vec()))
            .or_default()
            .push(s.info.clone());
    }
}

pub fn unwatch(ctx: &mut Ctx) {
    unwatch_all(ctx.t, ctx.s);
    ctx.out.ok();
}

/// Drops every WATCH of the session and clears its dirty flag.
pub fn unwatch_all(t: &mut Tenant, s: &mut Session) {
    let id = s.info.id;
    for (db, key, _) in s.watched.drain(..) {
        let k = (db, key);
        if let Some(cs) = t.watched.get_mut(&k) {
            cs.retain(|c| c.id != id);
            if cs.is_empty() {
                t.watched.remove(&k);
            }
        }
    }
    s.info.dirty_cas.set(false);
}
