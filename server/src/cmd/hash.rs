//! Hash commands (Redis's t_hash.c): HSET and friends, counters,
//! HRANDFIELD, HSCAN.
//!
//! Replies, error texts, encoding conversions and keyspace events follow
//! Redis 7.0. Every change is propagated as its effect: deterministic
//! commands as received, HINCRBYFLOAT as `HSET key field <result>`.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{errors, Ctx, Replied, NOTIFY_HASH};
use crate::db::dense::Elem;
use crate::db::hash::{Hash, HashLimits};
use crate::db::{Kind, Value};
use crate::resp::Reply;
use crate::tenant::Tenant;
use crate::util::{glob_match, ld_incr, parse_i64, LdIncrError};

/// Most elements a negative-count HRANDFIELD/SRANDMEMBER may return. Redis
/// has no limit and builds the reply until memory runs out; we refuse
/// (see docs: intended difference).
pub(super) const MAX_RANDOM_REPLY: u64 = 1 << 24;

/// The encoding thresholds, read once per command.
fn limits(ctx: &Ctx) -> HashLimits {
    HashLimits {
        max_entries: ctx.set.hash_max_listpack_entries,
        max_value: ctx.set.hash_max_listpack_value,
    }
}

/// Replies one stored element as a bulk string.
#[inline]
pub(super) fn reply_elem(out: &mut Reply, e: Elem<'_>) {
    match e {
        Elem::Str(s) => out.bulk(s),
        Elem::Int(n) => out.bulk_i64(n),
    }
}

fn hash_at(t: &Tenant, db: usize, idx: u32) -> Option<&Hash> {
    t.ks.dbs[db].entry(idx).value.as_hash()
}

fn hash_at_mut(t: &mut Tenant, db: usize, idx: u32) -> Option<&mut Hash> {
    t.ks.dbs[db].entry_mut(idx).value.as_hash_mut()
}

/// Looks a hash up for reading: `Ok(None)` if missing, `Err` after WRONGTYPE.
fn read_hash(ctx: &mut Ctx, key: &[u8]) -> Result<Option<u32>, Replied> {
    ctx.lookup_typed(key, Kind::Hash, true)
}

/// Looks a hash up for writing.
fn write_hash(ctx: &mut Ctx, key: &[u8]) -> Result<Option<u32>, Replied> {
    ctx.lookup_typed(key, Kind::Hash, false)
}

/// The hash at `key` for writing, created empty if missing (Redis's
/// `hashTypeLookupWriteOrCreate`); `None` after replying WRONGTYPE.
fn write_or_create(ctx: &mut Ctx, key: &[u8]) -> Option<u32> {
    match write_hash(ctx, key) {
        Err(Replied) => None,
        Ok(Some(idx)) => Some(idx),
        Ok(None) => Some(ctx.set_key(key, Value::Hash(Box::default()), false)),
    }
}

fn arity_error(ctx: &mut Ctx) {
    let msg = format!("wrong number of arguments for '{}' command", ctx.spec.name);
    ctx.err(&msg);
}

/// HSET and HMSET.
pub fn hset(ctx: &mut Ctx) {
    if !ctx.args.len().is_multiple_of(2) {
        return arity_error(ctx);
    }
    let lim = limits(ctx);
    let key = ctx.args[1];
    let Some(idx) = write_or_create(ctx, key) else {
        return;
    };
    let args = ctx.args;
    let db = ctx.s.db;
    let mut created = 0;
    if let Some(h) = hash_at_mut(ctx.t, db, idx) {
        h.convert_for_args(&args[2..], lim);
        for pair in args[2..].chunks_exact(2) {
            if h.set(pair[0], pair[1], lim) {
                created += 1;
            }
        }
    }
    if ctx.spec.name == "hset" {
        ctx.out.int(created);
    } else {
        ctx.out.ok();
    }
    ctx.propagate_as_is();
    ctx.notify(NOTIFY_HASH, "hset", key);
}

pub fn hsetnx(ctx: &mut Ctx) {
    let lim = limits(ctx);
    let (key, field, value) = (ctx.args[1], ctx.args[2], ctx.args[3]);
    let Some(idx) = write_or_create(ctx, key) else {
        return;
    };
    let db = ctx.s.db;
    let Some(h) = hash_at_mut(ctx.t, db, idx) else {
        return;
    };
    if h.contains(field) {
        return ctx.out.int(0);
    }
    h.convert_for_args(&[field, value], lim);
    h.set(field, value, lim);
    ctx.out.int(1);
    ctx.propagate_as_is();
    ctx.notify(NOTIFY_HASH, "hset", key);
}

pub fn hget(ctx: &mut Ctx) {
    let (key, field) = (ctx.args[1], ctx.args[2]);
    let Ok(idx) = read_hash(ctx, key) else { return };
    let db = ctx.s.db;
    match idx
        .and_then(|i| hash_at(ctx.t, db, i))
        .and_then(|h| h.get(field))
    {
        Some(v) => reply_elem(ctx.out, v),
        None => ctx.out.null(),
    }
}

pub fn hmget(ctx: &mut Ctx) {
    let key = ctx.args[1];
    let Ok(idx) = read_hash(ctx, key) else { return };
    let db = ctx.s.db;
    let h = idx.and_then(|i| hash_at(ctx.t, db, i));
    ctx.out.array(ctx.args.len() - 2);
    for field in &ctx.args[2..] {
        match h.and_then(|h| h.get(field)) {
            Some(v) => reply_elem(ctx.out, v),
            None => ctx.out.null(),
        }
    }
}

pub fn hdel(ctx: &mut Ctx) {
    let key = ctx.args[1];
    let idx = match write_hash(ctx, key) {
        Err(Replied) => return,
        Ok(None) => return ctx.out.int(0),
        Ok(Some(i)) => i,
    };
    let db = ctx.s.db;
    let args = ctx.args;
    let mut deleted = 0;
    let mut emptied = false;
    if let Some(h) = hash_at_mut(ctx.t, db, idx) {
        for field in &args[2..] {
            if h.remove(field) {
                deleted += 1;
                if h.is_empty() {
                    emptied = true;
                    break;
                }
            }
        }
    }
    ctx.finish_removal(idx, key, deleted, emptied, NOTIFY_HASH, "hdel");
}

/// Runs `f` on the hash at `key` for reading, or replies `missing`.
fn with_hash(
    ctx: &mut Ctx,
    key: &[u8],
    missing: impl FnOnce(&mut Reply),
    f: impl FnOnce(&Hash, &mut Reply),
) {
    let Ok(idx) = read_hash(ctx, key) else { return };
    let db = ctx.s.db;
    match idx.and_then(|i| hash_at(ctx.t, db, i)) {
        Some(h) => f(h, ctx.out),
        None => missing(ctx.out),
    }
}

pub fn hlen(ctx: &mut Ctx) {
    let key = ctx.args[1];
    with_hash(ctx, key, |o| o.int(0), |h, o| o.int(h.len() as i64));
}

pub fn hstrlen(ctx: &mut Ctx) {
    let (key, field) = (ctx.args[1], ctx.args[2]);
    with_hash(
        ctx,
        key,
        |o| o.int(0),
        |h, o| o.int(h.get(field).map_or(0, |v| v.byte_len()) as i64),
    );
}

pub fn hexists(ctx: &mut Ctx) {
    let (key, field) = (ctx.args[1], ctx.args[2]);
    with_hash(
        ctx,
        key,
        |o| o.int(0),
        |h, o| o.int(h.contains(field) as i64),
    );
}

/// HKEYS (`values` false) and HVALS: one side of every pair.
fn hash_side(ctx: &mut Ctx, values: bool) {
    let key = ctx.args[1];
    with_hash(
        ctx,
        key,
        |o| o.empty_array(),
        |h, o| {
            o.array(h.len());
            for (f, v) in h.iter() {
                reply_elem(o, if values { v } else { f });
            }
        },
    );
}

pub fn hkeys(ctx: &mut Ctx) {
    hash_side(ctx, false);
}

pub fn hvals(ctx: &mut Ctx) {
    hash_side(ctx, true);
}

pub fn hgetall(ctx: &mut Ctx) {
    let key = ctx.args[1];
    with_hash(
        ctx,
        key,
        |o| o.map(0),
        |h, o| {
            o.map(h.len());
            for (f, v) in h.iter() {
                reply_elem(o, f);
                reply_elem(o, v);
            }
        },
    );
}

pub fn hincrby(ctx: &mut Ctx) {
    let lim = limits(ctx);
    let Some(incr) = ctx.arg_i64(3) else { return };
    let (key, field) = (ctx.args[1], ctx.args[2]);
    let Ok(idx) = write_hash(ctx, key) else {
        return;
    };
    let db = ctx.s.db;
    let cur = match idx
        .and_then(|i| hash_at(ctx.t, db, i))
        .and_then(|h| h.get(field))
    {
        None => 0,
        Some(Elem::Int(n)) => n,
        Some(Elem::Str(s)) => match parse_i64(s) {
            Some(n) => n,
            None => return ctx.err("hash value is not an integer"),
        },
    };
    let Some(new) = cur.checked_add(incr) else {
        return ctx.err("increment or decrement would overflow");
    };
    let idx = match idx {
        Some(i) => i,
        None => ctx.set_key(key, Value::Hash(Box::default()), false),
    };
    let mut b = [0u8; 20];
    let nb = crate::util::fmt_i64(new, &mut b);
    if let Some(h) = hash_at_mut(ctx.t, db, idx) {
        h.set(field, nb, lim);
    }
    ctx.out.int(new);
    ctx.propagate_as_is();
    ctx.notify(NOTIFY_HASH, "hincrby", key);
}

pub fn hincrbyfloat(ctx: &mut Ctx) {
    let lim = limits(ctx);
    let (key, field, incr) = (ctx.args[1], ctx.args[2], ctx.args[3]);
    // The increment is validated before the key is looked at.
    let alone = match ld_incr(None, incr) {
        Err(LdIncrError::NanOrInf) => return ctx.err("value is NaN or Infinity"),
        Err(_) => return ctx.err(errors::NOT_FLOAT),
        Ok(v) => v,
    };
    let Ok(idx) = write_hash(ctx, key) else {
        return;
    };
    let db = ctx.s.db;
    let cur = idx
        .and_then(|i| hash_at(ctx.t, db, i))
        .and_then(|h| h.get(field));
    let result = match cur {
        None => Ok(alone),
        Some(e) => e.with_bytes(|b| ld_incr(Some(b), incr)),
    };
    let new = match result {
        Ok(v) => v,
        Err(LdIncrError::NanOrInf) => return ctx.err("increment would produce NaN or Infinity"),
        Err(_) => return ctx.err("hash value is not a float"),
    };
    let idx = match idx {
        Some(i) => i,
        None => ctx.set_key(key, Value::Hash(Box::default()), false),
    };
    if let Some(h) = hash_at_mut(ctx.t, db, idx) {
        h.set(field, &new, lim);
    }
    ctx.out.bulk(&new);
    ctx.propagate(&[b"HSET", key, field, &new]);
    ctx.notify(NOTIFY_HASH, "hincrbyfloat", key);
}

/// Parses a random-count argument as Redis's `getRangeLongFromObjectOrReply`
/// with [-LONG_MAX, LONG_MAX].
pub(super) fn parse_random_count(ctx: &mut Ctx, i: usize) -> Option<i64> {
    match parse_i64(ctx.args[i]) {
        None => {
            ctx.err(errors::NOT_INTEGER);
            None
        }
        Some(i64::MIN) => {
            ctx.err("value is out of range, value must between -9223372036854775807 and 9223372036854775807");
            None
        }
        Some(n) => Some(n),
    }
}

/// `count` distinct indices below `n` (`count < n`), in random order.
pub(super) fn distinct_indices(rng: &mut SmallRng, n: usize, count: usize) -> Vec<usize> {
    if count.saturating_mul(3) > n {
        let mut v: Vec<usize> = (0..n).collect();
        for i in 0..count {
            let j = rng.random_range(i..n);
            v.swap(i, j);
        }
        v.truncate(count);
        v
    } else {
        let mut seen = hashbrown::HashSet::with_capacity(count);
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            let i = rng.random_range(0..n);
            if seen.insert(i) {
                out.push(i);
            }
        }
        out
    }
}

pub fn hrandfield(ctx: &mut Ctx) {
    let key = ctx.args[1];
    if ctx.args.len() >= 3 {
        let Some(l) = parse_random_count(ctx, 2) else {
            return;
        };
        let n = ctx.args.len();
        if n > 4 || (n == 4 && !ctx.args[3].eq_ignore_ascii_case(b"withvalues")) {
            return ctx.syntax_error();
        }
        let withvalues = n == 4;
        if withvalues && !(-(i64::MAX / 2)..=i64::MAX / 2).contains(&l) {
            return ctx.err("value is out of range");
        }
        return hrandfield_count(ctx, key, l, withvalues);
    }
    let Ok(idx) = read_hash(ctx, key) else { return };
    let mut rng = SmallRng::seed_from_u64(ctx.t.random());
    let db = ctx.s.db;
    match idx.and_then(|i| hash_at(ctx.t, db, i)) {
        Some(h) if !h.is_empty() => {
            let s = h.sampler();
            let (f, _) = s.get(rng.random_range(0..s.len()));
            reply_elem(ctx.out, f);
        }
        _ => ctx.out.null(),
    }
}

fn hrandfield_count(ctx: &mut Ctx, key: &[u8], l: i64, withvalues: bool) {
    let Ok(idx) = read_hash(ctx, key) else { return };
    let (count, uniq) = if l >= 0 {
        (l as u64, true)
    } else {
        (l.unsigned_abs(), false)
    };
    let mut rng = SmallRng::seed_from_u64(ctx.t.random());
    let db = ctx.s.db;
    let Some(h) = idx.and_then(|i| hash_at(ctx.t, db, i)) else {
        return ctx.out.empty_array();
    };
    if count == 0 || h.is_empty() {
        return ctx.out.empty_array();
    }
    if !uniq && count > MAX_RANDOM_REPLY {
        return ctx.err("value is out of range");
    }
    let out = &mut *ctx.out;
    let resp3 = out.resp >= 3;
    let emit = |out: &mut Reply, f: Elem<'_>, v: Elem<'_>| {
        if withvalues && resp3 {
            out.array(2);
        }
        reply_elem(out, f);
        if withvalues {
            reply_elem(out, v);
        }
    };
    let header = |out: &mut Reply, n: usize| {
        if withvalues && !resp3 {
            out.array(2 * n);
        } else {
            out.array(n);
        }
    };
    let size = h.len();
    if !uniq || count == 1 {
        let s = h.sampler();
        header(out, count as usize);
        for _ in 0..count {
            let (f, v) = s.get(rng.random_range(0..s.len()));
            emit(out, f, v);
        }
        return;
    }
    if count >= size as u64 {
        header(out, size);
        for (f, v) in h.iter() {
            emit(out, f, v);
        }
        return;
    }
    let s = h.sampler();
    let picks = distinct_indices(&mut rng, s.len(), count as usize);
    header(out, picks.len());
    for i in picks {
        let (f, v) = s.get(i);
        emit(out, f, v);
    }
}

/// SCAN-family options after the cursor (Redis's `scanGenericCommand` for
/// a key: COUNT and MATCH; TYPE is a syntax error here).
pub(super) fn parse_scan_opts<'a>(
    ctx: &mut Ctx<'a>,
    from: usize,
) -> Option<(usize, Option<&'a [u8]>)> {
    let args = ctx.args;
    let mut count = 10usize;
    let mut pat = None;
    let mut i = from;
    while i < args.len() {
        let left = args.len() - i;
        let o = args[i];
        if o.eq_ignore_ascii_case(b"count") && left >= 2 {
            let c = ctx.arg_i64(i + 1)?;
            if c < 1 {
                ctx.syntax_error();
                return None;
            }
            count = usize::try_from(c).unwrap_or(usize::MAX);
        } else if o.eq_ignore_ascii_case(b"match") && left >= 2 {
            let p = args[i + 1];
            pat = if p == b"*" { None } else { Some(p) };
        } else {
            ctx.syntax_error();
            return None;
        }
        i += 2;
    }
    Some((count, pat))
}

/// Writes a SCAN-family reply: the next cursor and the elements.
pub(super) fn reply_scan(out: &mut Reply, cursor: u64, items: &[Elem<'_>]) {
    out.array(2);
    out.bulk(cursor.to_string().as_bytes());
    out.array(items.len());
    for &e in items {
        reply_elem(out, e);
    }
}

pub fn hscan(ctx: &mut Ctx) {
    let key = ctx.args[1];
    let Some(cursor) = super::keys::parse_cursor(ctx.args[2]) else {
        return ctx.err("invalid cursor");
    };
    let Ok(idx) = read_hash(ctx, key) else { return };
    let Some(idx) = idx else {
        return reply_scan(ctx.out, 0, &[]);
    };
    let Some((count, pat)) = parse_scan_opts(ctx, 3) else {
        return;
    };
    let db = ctx.s.db;
    let Some(h) = hash_at(ctx.t, db, idx) else {
        return reply_scan(ctx.out, 0, &[]);
    };
    let mut items = Vec::new();
    let next = h.scan(cursor, count, |f, v| {
        if pat.is_none_or(|p| f.with_bytes(|b| glob_match(p, b, false))) {
            items.push(f);
            items.push(v);
        }
    });
    reply_scan(ctx.out, next, &items);
}
