//! Set commands (Redis's t_set.c): SADD and friends, SPOP/SRANDMEMBER,
//! SMOVE, the algebra (SINTER/SUNION/SDIFF, their STORE forms, SINTERCARD)
//! and SSCAN.
//!
//! Replies, error texts, encoding conversions and keyspace events follow
//! Redis 7.0. Effects propagated: deterministic commands as received; SPOP
//! as `SREM key <popped...>` (or `DEL key` when it empties the set); the
//! STORE forms as `DEL dst` (when dst existed) plus `SADD dst <result...>`,
//! so the log names only the key that changed.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::hash::{
    distinct_indices, parse_random_count, parse_scan_opts, reply_elem, reply_scan, MAX_RANDOM_REPLY,
};
use super::{Ctx, Replied, NOTIFY_GENERIC, NOTIFY_SET};
use crate::db::dense::Elem;
use crate::db::set::Set;
use crate::db::{Kind, Value};
use crate::tenant::Tenant;
use crate::util::{glob_match, parse_i64};

/// `set-max-intset-entries`, read once per command.
fn max_intset(ctx: &Ctx) -> usize {
    ctx.set.set_max_intset_entries
}

fn set_at(t: &Tenant, db: usize, idx: u32) -> Option<&Set> {
    t.ks.dbs[db].entry(idx).value.as_set()
}

fn set_at_mut(t: &mut Tenant, db: usize, idx: u32) -> Option<&mut Set> {
    t.ks.dbs[db].entry_mut(idx).value.as_set_mut()
}

fn check_set(ctx: &mut Ctx, idx: Option<u32>) -> Result<Option<u32>, Replied> {
    ctx.check_kind(idx, Kind::Set)
}

fn read_set(ctx: &mut Ctx, key: &[u8]) -> Result<Option<u32>, Replied> {
    ctx.lookup_typed(key, Kind::Set, true)
}

fn write_set(ctx: &mut Ctx, key: &[u8]) -> Result<Option<u32>, Replied> {
    ctx.lookup_typed(key, Kind::Set, false)
}

pub fn sadd(ctx: &mut Ctx) {
    let max = max_intset(ctx);
    let key = ctx.args[1];
    let idx = match write_set(ctx, key) {
        Err(Replied) => return,
        Ok(Some(i)) => i,
        Ok(None) => {
            let s = Set::new_for(ctx.args[2]);
            ctx.set_key(key, Value::Set(Box::new(s)), false)
        }
    };
    let args = ctx.args;
    let db = ctx.s.db;
    let mut added = 0;
    if let Some(s) = set_at_mut(ctx.t, db, idx) {
        for m in &args[2..] {
            if s.add(m, max) {
                added += 1;
            }
        }
    }
    if added > 0 {
        ctx.propagate_as_is();
        ctx.notify(NOTIFY_SET, "sadd", key);
    }
    ctx.out.int(added);
}

pub fn srem(ctx: &mut Ctx) {
    let key = ctx.args[1];
    let idx = match write_set(ctx, key) {
        Err(Replied) => return,
        Ok(None) => return ctx.out.int(0),
        Ok(Some(i)) => i,
    };
    let args = ctx.args;
    let db = ctx.s.db;
    let mut deleted = 0;
    let mut emptied = false;
    if let Some(s) = set_at_mut(ctx.t, db, idx) {
        for m in &args[2..] {
            if s.remove(m) {
                deleted += 1;
                if s.is_empty() {
                    emptied = true;
                    break;
                }
            }
        }
    }
    ctx.finish_removal(idx, key, deleted, emptied, NOTIFY_SET, "srem");
}

/// Runs `f` on the set at `key` for reading; `None` if missing. `Err`
/// after WRONGTYPE.
fn with_set<R>(
    ctx: &mut Ctx,
    key: &[u8],
    f: impl FnOnce(&Set, &mut crate::resp::Reply) -> R,
) -> Result<Option<R>, Replied> {
    let idx = read_set(ctx, key)?;
    let db = ctx.s.db;
    Ok(idx
        .and_then(|i| set_at(ctx.t, db, i))
        .map(|s| f(s, ctx.out)))
}

pub fn smembers(ctx: &mut Ctx) {
    let key = ctx.args[1];
    let r = with_set(ctx, key, |s, o| {
        o.set(s.len());
        for m in s.iter() {
            reply_elem(o, m);
        }
    });
    if let Ok(None) = r {
        ctx.out.set(0);
    }
}

pub fn sismember(ctx: &mut Ctx) {
    let (key, m) = (ctx.args[1], ctx.args[2]);
    if let Ok(None) = with_set(ctx, key, |s, o| o.int(s.contains(m) as i64)) {
        ctx.out.int(0);
    }
}

pub fn smismember(ctx: &mut Ctx) {
    let key = ctx.args[1];
    let Ok(idx) = read_set(ctx, key) else { return };
    let db = ctx.s.db;
    let s = idx.and_then(|i| set_at(ctx.t, db, i));
    ctx.out.array(ctx.args.len() - 2);
    for m in &ctx.args[2..] {
        ctx.out.int(s.is_some_and(|s| s.contains(m)) as i64);
    }
}

pub fn scard(ctx: &mut Ctx) {
    let key = ctx.args[1];
    if let Ok(None) = with_set(ctx, key, |s, o| o.int(s.len() as i64)) {
        ctx.out.int(0);
    }
}

pub fn spop(ctx: &mut Ctx) {
    match ctx.args.len() {
        3 => return spop_count(ctx),
        n if n > 3 => return ctx.syntax_error(),
        _ => {}
    }
    let key = ctx.args[1];
    let idx = match write_set(ctx, key) {
        Err(Replied) => return,
        Ok(None) => return ctx.out.null(),
        Ok(Some(i)) => i,
    };
    let r = ctx.t.random();
    let db = ctx.s.db;
    let Some(s) = set_at_mut(ctx.t, db, idx) else {
        return ctx.out.null();
    };
    if s.is_empty() {
        return ctx.out.null();
    }
    let m = s.at((r % s.len() as u64) as usize).to_vec();
    s.remove(&m);
    let emptied = s.is_empty();
    ctx.notify(NOTIFY_SET, "spop", key);
    ctx.propagate(&[b"SREM", key, &m]);
    ctx.out.bulk(&m);
    if emptied {
        ctx.db().remove_at(idx);
        ctx.notify(NOTIFY_GENERIC, "del", key);
    }
}

/// How much bigger than the popped part the rest must be for SPOP to pick
/// elements one by one rather than rebuild the set (Redis's
/// `SPOP_MOVE_STRATEGY_MUL`; the rebuild re-derives the encoding).
const SPOP_MOVE_STRATEGY_MUL: u64 = 5;

fn spop_count(ctx: &mut Ctx) {
    let count = match parse_i64(ctx.args[2]) {
        Some(n) if n >= 0 => n as u64,
        _ => return ctx.err("value is out of range, must be positive"),
    };
    let max = max_intset(ctx);
    let key = ctx.args[1];
    let idx = match write_set(ctx, key) {
        Err(Replied) => return,
        Ok(None) => return ctx.out.set(0),
        Ok(Some(i)) => i,
    };
    if count == 0 {
        return ctx.out.set(0);
    }
    let mut rng = SmallRng::seed_from_u64(ctx.t.random());
    let db = ctx.s.db;
    let Some(s) = set_at_mut(ctx.t, db, idx) else {
        return ctx.out.set(0);
    };
    let size = s.len() as u64;
    if count >= size {
        // The whole set: reply it, delete the key, log a DEL.
        ctx.out.set(size as usize);
        for m in s.iter() {
            reply_elem(ctx.out, m);
        }
        ctx.db().remove_at(idx);
        ctx.notify(NOTIFY_SET, "spop", key);
        ctx.notify(NOTIFY_GENERIC, "del", key);
        ctx.propagate(&[b"DEL", key]);
        return;
    }
    let remaining = size - count;
    let popped: Vec<Vec<u8>> = if remaining * SPOP_MOVE_STRATEGY_MUL > count {
        let mut popped = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let m = s.at(rng.random_range(0..s.len())).to_vec();
            s.remove(&m);
            popped.push(m);
        }
        popped
    } else {
        // Most of the set goes: keep `remaining` random members in a new
        // set (whose encoding Redis derives afresh) and pop the rest.
        let keep = distinct_indices(&mut rng, s.len(), remaining as usize);
        let mut kept = vec![false; s.len()];
        for &i in &keep {
            kept[i] = true;
        }
        let newset = Set::from_members(keep.iter().map(|&i| s.at(i)), max);
        let popped = (0..s.len())
            .filter(|&i| !kept[i])
            .map(|i| s.at(i).to_vec())
            .collect();
        *s = newset;
        popped
    };
    ctx.notify(NOTIFY_SET, "spop", key);
    ctx.out.set(popped.len());
    for m in &popped {
        ctx.out.bulk(m);
    }
    let mut prop: Vec<&[u8]> = Vec::with_capacity(popped.len() + 2);
    prop.push(b"SREM");
    prop.push(key);
    prop.extend(popped.iter().map(|m| m.as_slice()));
    ctx.propagate(&prop);
}

pub fn srandmember(ctx: &mut Ctx) {
    match ctx.args.len() {
        3 => return srandmember_count(ctx),
        n if n > 3 => return ctx.syntax_error(),
        _ => {}
    }
    let key = ctx.args[1];
    let Ok(idx) = read_set(ctx, key) else { return };
    let r = ctx.t.random();
    let db = ctx.s.db;
    match idx.and_then(|i| set_at(ctx.t, db, i)) {
        Some(s) if !s.is_empty() => reply_elem(ctx.out, s.at((r % s.len() as u64) as usize)),
        _ => ctx.out.null(),
    }
}

fn srandmember_count(ctx: &mut Ctx) {
    let Some(l) = parse_random_count(ctx, 2) else {
        return;
    };
    let (count, uniq) = if l >= 0 {
        (l as u64, true)
    } else {
        (l.unsigned_abs(), false)
    };
    let key = ctx.args[1];
    let Ok(idx) = read_set(ctx, key) else { return };
    if !uniq && count > MAX_RANDOM_REPLY && idx.is_some() {
        return ctx.err("value is out of range");
    }
    let mut rng = SmallRng::seed_from_u64(ctx.t.random());
    let db = ctx.s.db;
    let Some(s) = idx.and_then(|i| set_at(ctx.t, db, i)) else {
        return ctx.out.empty_array();
    };
    if count == 0 || s.is_empty() {
        return ctx.out.empty_array();
    }
    let out = &mut *ctx.out;
    let size = s.len();
    if !uniq || count == 1 {
        out.array(count as usize);
        for _ in 0..count {
            reply_elem(out, s.at(rng.random_range(0..size)));
        }
    } else if count >= size as u64 {
        out.array(size);
        for m in s.iter() {
            reply_elem(out, m);
        }
    } else {
        let picks = distinct_indices(&mut rng, size, count as usize);
        out.array(picks.len());
        for i in picks {
            reply_elem(out, s.at(i));
        }
    }
}

pub fn smove(ctx: &mut Ctx) {
    let max = max_intset(ctx);
    let (src, dst, m) = (ctx.args[1], ctx.args[2], ctx.args[3]);
    let sidx = ctx.lookup_write(src);
    let didx = ctx.lookup_write(dst);
    // Re-find: the second lookup may have expired (and moved) an entry.
    let db = ctx.s.db;
    let sidx = sidx.and_then(|_| ctx.t.ks.dbs[db].find(src));
    let didx = didx.and_then(|_| ctx.t.ks.dbs[db].find(dst));
    let Some(sidx) = sidx else {
        return ctx.out.int(0);
    };
    if check_set(ctx, Some(sidx)).is_err() || check_set(ctx, didx).is_err() {
        return;
    }
    if src == dst {
        let is = set_at(ctx.t, db, sidx).is_some_and(|s| s.contains(m));
        return ctx.out.int(is as i64);
    }
    let Some(s) = set_at_mut(ctx.t, db, sidx) else {
        return ctx.out.int(0);
    };
    if !s.remove(m) {
        return ctx.out.int(0);
    }
    let emptied = s.is_empty();
    ctx.notify(NOTIFY_SET, "srem", src);
    if emptied {
        ctx.db().remove_at(sidx);
        ctx.notify(NOTIFY_GENERIC, "del", src);
    }
    let didx = match ctx.t.ks.dbs[db].find(dst) {
        Some(i) => i,
        None => ctx.set_key(dst, Value::Set(Box::new(Set::new_for(m))), false),
    };
    let added = set_at_mut(ctx.t, db, didx).is_some_and(|d| d.add(m, max));
    if added {
        ctx.notify(NOTIFY_SET, "sadd", dst);
        ctx.propagate_as_is();
    } else {
        // The destination had it: only the source changed (and only its
        // WATCHes fail, as in Redis).
        ctx.propagate(&[b"SREM", src, m]);
    }
    ctx.out.int(1);
}

/// Looks up every key as a set source (Redis's `lookupKeyRead` + type
/// check, in order). Returns the current index of each (after all lazy
/// expiries, which can move entries), or `Err` after WRONGTYPE.
fn resolve_sets(ctx: &mut Ctx, keys: &[&[u8]]) -> Result<Vec<Option<u32>>, Replied> {
    let mut alive = Vec::with_capacity(keys.len());
    for k in keys {
        alive.push(read_set(ctx, k)?.is_some());
    }
    // Re-find only what the lookups found: a key they hid (logically
    // expired on a replica) is still in the table.
    let db = ctx.s.db;
    Ok(keys
        .iter()
        .zip(alive)
        .map(|(k, a)| a.then(|| ctx.t.ks.dbs[db].find(k)).flatten())
        .collect())
}

fn sets_of<'t>(t: &'t Tenant, db: usize, idx: &[Option<u32>]) -> Vec<Option<&'t Set>> {
    idx.iter()
        .map(|i| i.and_then(|i| set_at(t, db, i)))
        .collect()
}

/// Stores a STORE-family result at `dst` (Redis's `setKey`, which drops any
/// TTL) and replies its size; an empty result deletes `dst`.
fn store_result(ctx: &mut Ctx, dst: &[u8], result: Set, event: &str) {
    let existed = ctx.lookup_write(dst).is_some();
    if result.is_empty() {
        if existed {
            ctx.delete_key(dst);
            ctx.notify(NOTIFY_GENERIC, "del", dst);
            ctx.propagate(&[b"DEL", dst]);
        }
        return ctx.out.int(0);
    }
    let n = result.len();
    let members = result.members();
    ctx.set_key(dst, Value::Set(Box::new(result)), false);
    if existed {
        ctx.propagate(&[b"DEL", dst]);
    }
    let mut prop: Vec<&[u8]> = Vec::with_capacity(n + 2);
    prop.push(b"SADD");
    prop.push(dst);
    prop.extend(members.iter().map(|m| m.as_slice()));
    ctx.propagate(&prop);
    ctx.notify(NOTIFY_SET, event, dst);
    ctx.out.int(n as i64);
}

/// What SINTER-family callers want from the intersection.
enum InterMode<'a> {
    Reply,
    Card(u64),
    Store(&'a [u8]),
}

fn sinter_generic(ctx: &mut Ctx, keys: &[&[u8]], mode: InterMode<'_>) {
    let Ok(idx) = resolve_sets(ctx, keys) else {
        return;
    };
    let max = max_intset(ctx);
    let db = ctx.s.db;
    let mut sets = sets_of(ctx.t, db, &idx);
    if sets.iter().any(|s| s.is_none_or(|s| s.is_empty())) {
        match mode {
            InterMode::Reply => ctx.out.set(0),
            InterMode::Card(_) => ctx.out.int(0),
            InterMode::Store(dst) => store_result(ctx, dst, Set::default(), "sinterstore"),
        }
        return;
    }
    let mut sets: Vec<&Set> = sets.drain(..).flatten().collect();
    sets.sort_by_key(|s| s.len());
    let first = sets[0];
    let others: Vec<&Set> = sets[1..]
        .iter()
        .copied()
        .filter(|s| !std::ptr::eq(*s, first))
        .collect();
    let mut found: Vec<Elem<'_>> = Vec::new();
    let mut card = 0u64;
    for e in first.iter() {
        if others.iter().all(|s| s.contains_elem(e)) {
            match mode {
                InterMode::Card(limit) => {
                    card += 1;
                    if limit != 0 && card >= limit {
                        break;
                    }
                }
                _ => found.push(e),
            }
        }
    }
    match mode {
        InterMode::Card(_) => ctx.out.int(card as i64),
        InterMode::Reply => {
            ctx.out.set(found.len());
            for e in found {
                reply_elem(ctx.out, e);
            }
        }
        InterMode::Store(dst) => {
            let result = Set::from_members(found, max);
            store_result(ctx, dst, result, "sinterstore");
        }
    }
}

pub fn sinter(ctx: &mut Ctx) {
    let keys = &ctx.args[1..];
    sinter_generic(ctx, keys, InterMode::Reply)
}

pub fn sinterstore(ctx: &mut Ctx) {
    let (dst, keys) = (ctx.args[1], &ctx.args[2..]);
    sinter_generic(ctx, keys, InterMode::Store(dst))
}

pub fn sintercard(ctx: &mut Ctx) {
    const NUMKEYS: &str = "numkeys should be greater than 0";
    let numkeys = match parse_i64(ctx.args[1]) {
        Some(n) if n >= 1 => n as u64,
        _ => return ctx.err(NUMKEYS),
    };
    if numkeys > (ctx.args.len() - 2) as u64 {
        return ctx.err("Number of keys can't be greater than number of args");
    }
    let numkeys = numkeys as usize;
    let mut limit = 0u64;
    let mut j = 2 + numkeys;
    while j < ctx.args.len() {
        let more = ctx.args.len() - 1 - j;
        if ctx.args[j].eq_ignore_ascii_case(b"limit") && more > 0 {
            j += 1;
            match parse_i64(ctx.args[j]) {
                Some(n) if n >= 0 => limit = n as u64,
                _ => return ctx.err("LIMIT can't be negative"),
            }
        } else {
            return ctx.syntax_error();
        }
        j += 1;
    }
    let keys = &ctx.args[2..2 + numkeys];
    sinter_generic(ctx, keys, InterMode::Card(limit))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Union,
    Diff,
}

fn sunion_diff(ctx: &mut Ctx, keys: &[&[u8]], dst: Option<&[u8]>, op: Op) {
    let Ok(idx) = resolve_sets(ctx, keys) else {
        return;
    };
    let max = max_intset(ctx);
    let db = ctx.s.db;
    let sets = sets_of(ctx.t, db, &idx);
    let result = match op {
        Op::Union => Set::from_members(sets.iter().flatten().flat_map(|s| s.iter()), max),
        Op::Diff => match sets[0] {
            None => Set::default(),
            Some(first) => {
                let others: Vec<&Set> = sets[1..].iter().flatten().copied().collect();
                Set::from_members(
                    first
                        .iter()
                        .filter(|&e| !others.iter().any(|s| s.contains_elem(e))),
                    max,
                )
            }
        },
    };
    match dst {
        None => {
            ctx.out.set(result.len());
            for e in result.iter() {
                reply_elem(ctx.out, e);
            }
        }
        Some(dst) => {
            let event = if op == Op::Union {
                "sunionstore"
            } else {
                "sdiffstore"
            };
            store_result(ctx, dst, result, event);
        }
    }
}

pub fn sunion(ctx: &mut Ctx) {
    let keys = &ctx.args[1..];
    sunion_diff(ctx, keys, None, Op::Union)
}

pub fn sunionstore(ctx: &mut Ctx) {
    let (dst, keys) = (ctx.args[1], &ctx.args[2..]);
    sunion_diff(ctx, keys, Some(dst), Op::Union)
}

pub fn sdiff(ctx: &mut Ctx) {
    let keys = &ctx.args[1..];
    sunion_diff(ctx, keys, None, Op::Diff)
}

pub fn sdiffstore(ctx: &mut Ctx) {
    let (dst, keys) = (ctx.args[1], &ctx.args[2..]);
    sunion_diff(ctx, keys, Some(dst), Op::Diff)
}

pub fn sscan(ctx: &mut Ctx) {
    let key = ctx.args[1];
    let Some(cursor) = super::keys::parse_cursor(ctx.args[2]) else {
        return ctx.err("invalid cursor");
    };
    let Ok(idx) = read_set(ctx, key) else { return };
    let Some(idx) = idx else {
        return reply_scan(ctx.out, 0, &[]);
    };
    let Some((count, pat)) = parse_scan_opts(ctx, 3) else {
        return;
    };
    let db = ctx.s.db;
    let Some(s) = set_at(ctx.t, db, idx) else {
        return reply_scan(ctx.out, 0, &[]);
    };
    let mut items = Vec::new();
    let next = s.scan(cursor, count, |m| {
        if pat.is_none_or(|p| m.with_bytes(|b| glob_match(p, b, false))) {
            items.push(m);
        }
    });
    reply_scan(ctx.out, next, &items);
}
