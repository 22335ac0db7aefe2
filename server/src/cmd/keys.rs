//! Generic keyspace commands (Redis's db.c and expire.c): DEL, EXISTS,
//! TYPE, the EXPIRE/TTL family, KEYS, SCAN, RANDOMKEY, RENAME, COPY, MOVE,
//! TOUCH and OBJECT.

use super::{errors, lru_clock, Ctx, NOTIFY_GENERIC, NOTIFY_NEW};
use crate::db::{Kind, NO_EXPIRE};
use crate::util::{fmt_i64, glob_match};

pub fn del(ctx: &mut Ctx) {
    let mut n = 0;
    for i in 1..ctx.args.len() {
        if ctx.delete_key(ctx.args[i]) {
            ctx.notify(NOTIFY_GENERIC, "del", ctx.args[i]);
            n += 1;
        }
    }
    if n > 0 {
        ctx.propagate_as_is();
    }
    ctx.out.int(n);
}

pub fn exists(ctx: &mut Ctx) {
    let mut n = 0;
    for i in 1..ctx.args.len() {
        let db = ctx.s.db;
        let hit = ctx.lookup_notouch(db, ctx.args[i]).is_some();
        ctx.count_read(ctx.args[i], hit);
        n += hit as i64;
    }
    ctx.out.int(n);
}

pub fn type_(ctx: &mut Ctx) {
    let db = ctx.s.db;
    match ctx.lookup_notouch(db, ctx.args[1]) {
        Some(idx) => {
            ctx.count_read(ctx.args[1], true);
            let name = ctx.db().entry(idx).value.kind().name();
            ctx.out.simple(name)
        }
        None => {
            ctx.count_read(ctx.args[1], false);
            ctx.out.simple("none")
        }
    }
}

pub fn touch(ctx: &mut Ctx) {
    let mut n = 0;
    for i in 1..ctx.args.len() {
        if ctx.lookup_read(ctx.args[i]).is_some() {
            n += 1;
        }
    }
    ctx.out.int(n);
}

const EXPIRE_NX: u32 = 1;
const EXPIRE_XX: u32 = 2;
const EXPIRE_GT: u32 = 4;
const EXPIRE_LT: u32 = 8;

/// `expireGenericCommand`: `basetime` is 0 for absolute times.
fn expire_generic(ctx: &mut Ctx, basetime: i64, seconds: bool) {
    let mut flags = 0;
    for j in 3..ctx.args.len() {
        let o = ctx.args[j];
        if o.eq_ignore_ascii_case(b"nx") {
            flags |= EXPIRE_NX;
        } else if o.eq_ignore_ascii_case(b"xx") {
            flags |= EXPIRE_XX;
        } else if o.eq_ignore_ascii_case(b"gt") {
            flags |= EXPIRE_GT;
        } else if o.eq_ignore_ascii_case(b"lt") {
            flags |= EXPIRE_LT;
        } else {
            let mut msg = b"Unsupported option ".to_vec();
            msg.extend_from_slice(crate::util::c_str(o, usize::MAX));
            return ctx.err_bytes(&msg);
        }
    }
    if flags & EXPIRE_NX != 0 && flags & (EXPIRE_XX | EXPIRE_GT | EXPIRE_LT) != 0 {
        return ctx.err("NX and XX, GT or LT options at the same time are not compatible");
    }
    if flags & EXPIRE_GT != 0 && flags & EXPIRE_LT != 0 {
        return ctx.err("GT and LT options at the same time are not compatible");
    }
    let Some(mut when) = ctx.arg_i64(2) else {
        return;
    };
    let invalid = |ctx: &mut Ctx| {
        let msg = format!("invalid expire time in '{}' command", ctx.spec.name);
        ctx.err(&msg)
    };
    if seconds {
        if !(i64::MIN / 1000..=i64::MAX / 1000).contains(&when) {
            return invalid(ctx);
        }
        when *= 1000;
    }
    if when > i64::MAX - basetime {
        return invalid(ctx);
    }
    when += basetime;
    let key = ctx.args[1];
    let Some(idx) = ctx.lookup_write(key) else {
        return ctx.out.int(0);
    };
    if flags != 0 {
        let cur = ctx.db().entry(idx).expire_at;
        let has = cur != NO_EXPIRE;
        if (flags & EXPIRE_NX != 0 && has)
            || (flags & EXPIRE_XX != 0 && !has)
            || (flags & EXPIRE_GT != 0 && (!has || when <= cur))
            || (flags & EXPIRE_LT != 0 && has && when >= cur)
        {
            return ctx.out.int(0);
        }
    }
    if ctx.already_expired(when) {
        ctx.db().remove_at(idx);
        ctx.propagate(&[b"DEL", key]);
        ctx.notify(NOTIFY_GENERIC, "del", key);
    } else {
        ctx.db().set_expire(idx, when);
        let mut b = [0u8; 20];
        ctx.propagate(&[b"PEXPIREAT", key, fmt_i64(when, &mut b)]);
        ctx.notify(NOTIFY_GENERIC, "expire", key);
    }
    ctx.out.int(1);
}

pub fn expire(ctx: &mut Ctx) {
    let now = ctx.now_ms;
    expire_generic(ctx, now, true)
}

pub fn pexpire(ctx: &mut Ctx) {
    let now = ctx.now_ms;
    expire_generic(ctx, now, false)
}

pub fn expireat(ctx: &mut Ctx) {
    expire_generic(ctx, 0, true)
}

pub fn pexpireat(ctx: &mut Ctx) {
    expire_generic(ctx, 0, false)
}

/// `ttlGenericCommand`.
fn ttl_generic(ctx: &mut Ctx, ms: bool, absolute: bool) {
    let db = ctx.s.db;
    let Some(idx) = ctx.lookup_notouch(db, ctx.args[1]) else {
        ctx.count_read(ctx.args[1], false);
        return ctx.out.int(-2);
    };
    ctx.count_read(ctx.args[1], true);
    let exp = ctx.db().entry(idx).expire_at;
    if exp == NO_EXPIRE {
        return ctx.out.int(-1);
    }
    let ttl = if absolute {
        exp
    } else {
        exp.saturating_sub(ctx.now_ms).max(0)
    };
    // i128: an expiry near i64::MAX must round, not overflow.
    ctx.out.int(if ms {
        ttl
    } else {
        ((ttl as i128 + 500) / 1000) as i64
    });
}

pub fn ttl(ctx: &mut Ctx) {
    ttl_generic(ctx, false, false)
}

pub fn pttl(ctx: &mut Ctx) {
    ttl_generic(ctx, true, false)
}

pub fn expiretime(ctx: &mut Ctx) {
    ttl_generic(ctx, false, true)
}

pub fn pexpiretime(ctx: &mut Ctx) {
    ttl_generic(ctx, true, true)
}

pub fn persist(ctx: &mut Ctx) {
    let key = ctx.args[1];
    match ctx.lookup_write(key) {
        Some(idx) if ctx.db().entry(idx).has_expire() => {
            ctx.db().set_expire(idx, NO_EXPIRE);
            ctx.propagate_as_is();
            ctx.notify(NOTIFY_GENERIC, "persist", key);
            ctx.out.int(1);
        }
        _ => ctx.out.int(0),
    }
}

pub fn keys(ctx: &mut Ctx) {
    let pat = ctx.args[1];
    let all = pat == b"*";
    let now = ctx.now_ms;
    let db = ctx.s.db;
    let table = &ctx.t.ks.dbs[db];
    let mut found: Vec<&[u8]> = Vec::new();
    for e in table.iter() {
        if (all || glob_match(pat, &e.key, false)) && !(e.has_expire() && e.expire_at <= now) {
            found.push(&e.key);
        }
    }
    ctx.out.array(found.len());
    for k in found {
        ctx.out.bulk(k);
    }
}

/// Redis's `parseScanCursorOrReply` (strtoul semantics).
pub fn parse_cursor(s: &[u8]) -> Option<u64> {
    if s.first().is_some_and(|c| c.is_ascii_whitespace()) {
        return None;
    }
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut v: u64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
    }
    Some(if neg { v.wrapping_neg() } else { v })
}

pub fn scan(ctx: &mut Ctx) {
    let Some(cursor) = parse_cursor(ctx.args[1]) else {
        return ctx.err("invalid cursor");
    };
    let mut count: i64 = 10;
    let mut pat: Option<&[u8]> = None;
    let mut typ: Option<&[u8]> = None;
    let mut i = 2;
    while i < ctx.args.len() {
        let left = ctx.args.len() - i;
        let o = ctx.args[i];
        if o.eq_ignore_ascii_case(b"count") && left >= 2 {
            let Some(c) = ctx.arg_i64(i + 1) else { return };
            if c < 1 {
                return ctx.syntax_error();
            }
            count = c;
        } else if o.eq_ignore_ascii_case(b"match") && left >= 2 {
            let p = ctx.args[i + 1];
            pat = if p == b"*" { None } else { Some(p) };
        } else if o.eq_ignore_ascii_case(b"type") && left >= 2 {
            typ = Some(ctx.args[i + 1]);
        } else {
            return ctx.syntax_error();
        }
        i += 2;
    }
    let want_kind = typ.map(Kind::from_name);
    let db = ctx.s.db;
    let mut candidates: Vec<Vec<u8>> = Vec::new();
    let next = ctx.t.ks.dbs[db].scan(cursor, count as usize, |e| {
        if let Some(p) = pat {
            if !glob_match(p, &e.key, false) {
                return;
            }
        }
        match want_kind {
            Some(Some(k)) if e.value.kind() != k => return,
            Some(None) => return,
            _ => {}
        }
        candidates.push(e.key.to_vec());
    });
    // Expired keys are dropped (and deleted), as Redis's SCAN does.
    let mut keys = Vec::with_capacity(candidates.len());
    for k in candidates {
        if let Some(idx) = ctx.t.ks.dbs[db].find(&k) {
            if !ctx.expire_if_needed(db, idx) {
                keys.push(k);
            }
        }
    }
    ctx.out.array(2);
    ctx.out.bulk(next.to_string().as_bytes());
    ctx.out.array(keys.len());
    for k in &keys {
        ctx.out.bulk(k);
    }
}

pub fn randomkey(ctx: &mut Ctx) {
    let db = ctx.s.db;
    // Expired keys found on the way are deleted, as Redis's dbRandomKey does;
    // bounded so a keyspace of only-expired keys cannot spin.
    for _ in 0..1000 {
        let r = ctx.t.random();
        let Some(idx) = ctx.t.ks.dbs[db].random_index(r) else {
            return ctx.out.null();
        };
        if ctx.expire_if_needed(db, idx) {
            continue;
        }
        let key = ctx.t.ks.dbs[db].entry(idx).key.to_vec();
        return ctx.out.bulk(&key);
    }
    ctx.out.null()
}

fn rename_generic(ctx: &mut Ctx, nx: bool) {
    let (src, dst) = (ctx.args[1], ctx.args[2]);
    let Some(idx) = ctx.lookup_write(src) else {
        return ctx.err(errors::NO_SUCH_KEY);
    };
    if src == dst {
        return if nx { ctx.out.int(0) } else { ctx.out.ok() };
    }
    if ctx.lookup_write(dst).is_some() {
        if nx {
            return ctx.out.int(0);
        }
        ctx.delete_key(dst);
    }
    // Re-find: deleting dst may have moved src's slot.
    let idx = ctx.db().find(src).unwrap_or(idx);
    let entry = ctx.db().remove_at(idx);
    let lru = entry.lru;
    let nidx = ctx.db().upsert(dst, entry.value, lru);
    ctx.db().set_expire(nidx, entry.expire_at);
    ctx.propagate_as_is();
    ctx.notify(NOTIFY_NEW, "new", dst);
    ctx.notify(NOTIFY_GENERIC, "rename_from", src);
    ctx.notify(NOTIFY_GENERIC, "rename_to", dst);
    if nx {
        ctx.out.int(1)
    } else {
        ctx.out.ok()
    }
}

pub fn rename(ctx: &mut Ctx) {
    rename_generic(ctx, false)
}

pub fn renamenx(ctx: &mut Ctx) {
    rename_generic(ctx, true)
}

/// Redis's `getIntFromObjectOrReply` + `selectDb` range check.
fn db_index(ctx: &mut Ctx, arg_index: usize) -> Option<Result<usize, ()>> {
    let v = ctx.arg_int(arg_index)?;
    if v < 0 || v as usize >= ctx.t.ks.dbs.len() {
        return Some(Err(()));
    }
    Some(Ok(v as usize))
}

pub fn copy(ctx: &mut Ctx) {
    let src_db = ctx.s.db;
    let mut dst_db = src_db;
    let mut replace = false;
    let mut j = 3;
    while j < ctx.args.len() {
        let more = ctx.args.len() - j - 1;
        let o = ctx.args[j];
        if o.eq_ignore_ascii_case(b"replace") {
            replace = true;
        } else if o.eq_ignore_ascii_case(b"db") && more >= 1 {
            match db_index(ctx, j + 1) {
                None => return,
                Some(Err(())) => return ctx.err(errors::DB_INDEX),
                Some(Ok(d)) => dst_db = d,
            }
            j += 1;
        } else {
            return ctx.syntax_error();
        }
        j += 1;
    }
    let (key, newkey) = (ctx.args[1], ctx.args[2]);
    if src_db == dst_db && key == newkey {
        return ctx.err("source and destination objects are the same");
    }
    let Some(idx) = ctx.lookup_read(key) else {
        return ctx.out.int(0);
    };
    let (value, expire) = {
        let e = ctx.t.ks.dbs[src_db].entry(idx);
        (e.value.duplicate(), e.expire_at)
    };
    if ctx.lookup_write_in(dst_db, newkey).is_some() {
        if !replace {
            return ctx.out.int(0);
        }
        ctx.t.ks.dbs[dst_db].remove(newkey);
    }
    let lru = ctx.new_lru();
    let nidx = ctx.t.ks.dbs[dst_db].upsert(newkey, value, lru);
    ctx.t.ks.dbs[dst_db].set_expire(nidx, expire);
    ctx.propagate_as_is();
    ctx.t.notify(NOTIFY_NEW, "new", dst_db, newkey, ctx.now_ms);
    ctx.t
        .notify(NOTIFY_GENERIC, "copy_to", dst_db, newkey, ctx.now_ms);
    ctx.out.int(1);
}

pub fn move_(ctx: &mut Ctx) {
    let src_db = ctx.s.db;
    let dst_db = match db_index(ctx, 2) {
        None => return,
        Some(Err(())) => return ctx.err(errors::DB_INDEX),
        Some(Ok(d)) => d,
    };
    if src_db == dst_db {
        return ctx.err("source and destination objects are the same");
    }
    let key = ctx.args[1];
    if ctx.lookup_write(key).is_none() {
        return ctx.out.int(0);
    }
    if ctx.lookup_write_in(dst_db, key).is_some() {
        return ctx.out.int(0);
    }
    let Some(idx) = ctx.t.ks.dbs[src_db].find(key) else {
        return ctx.out.int(0);
    };
    let entry = ctx.t.ks.dbs[src_db].remove_at(idx);
    let nidx = ctx.t.ks.dbs[dst_db].upsert(key, entry.value, entry.lru);
    ctx.t.ks.dbs[dst_db].set_expire(nidx, entry.expire_at);
    ctx.propagate_as_is();
    ctx.t.notify(NOTIFY_NEW, "new", dst_db, key, ctx.now_ms);
    ctx.notify(NOTIFY_GENERIC, "move_from", key);
    ctx.t
        .notify(NOTIFY_GENERIC, "move_to", dst_db, key, ctx.now_ms);
    ctx.out.int(1);
}

/// OBJECT subcommands look keys up without touching them.
fn object_lookup(ctx: &mut Ctx) -> Option<u32> {
    let db = ctx.s.db;
    let r = ctx.lookup_notouch(db, ctx.args[2]);
    if r.is_none() {
        ctx.out.null();
    }
    r
}

/// Whether the policy that applies to this tenant (its plan's, for a
/// database) keeps LFU counters; the dispatcher sets `t.lfu` from it.
fn lfu_policy(ctx: &Ctx) -> bool {
    ctx.t.lfu.is_some()
}

pub fn object_encoding(ctx: &mut Ctx) {
    if let Some(idx) = object_lookup(ctx) {
        let enc = ctx.db().entry(idx).value.encoding();
        ctx.out.bulk(enc.as_bytes());
    }
}

pub fn object_refcount(ctx: &mut Ctx) {
    if let Some(idx) = object_lookup(ctx) {
        // Redis shares integer objects 0..9999 (refcount INT_MAX) unless an
        // LRU/LFU maxmemory policy needs per-object access data.
        let shared_ints = {
            let (lim, _) = ctx.t.memory_limits(&ctx.set.evict);
            let p = lim.policy.name();
            lim.maxmemory == 0 || !(p.contains("lru") || p.contains("lfu"))
        };
        let is_shared = shared_ints && ctx.db().entry(idx).value.is_shared_integer();
        ctx.out.int(if is_shared { i32::MAX as i64 } else { 1 });
    }
}

pub fn object_idletime(ctx: &mut Ctx) {
    if let Some(idx) = object_lookup(ctx) {
        if lfu_policy(ctx) {
            return ctx.err("An LFU maxmemory policy is selected, idle time not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.");
        }
        let now = lru_clock(ctx.now_ms);
        let lru = ctx.db().entry(idx).lru;
        let idle = if now >= lru {
            now - lru
        } else {
            now + (0x00FF_FFFF - lru)
        };
        ctx.out.int(idle as i64);
    }
}

pub fn object_freq(ctx: &mut Ctx) {
    if let Some(idx) = object_lookup(ctx) {
        if !lfu_policy(ctx) {
            return ctx.err("An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.");
        }
        let lru = ctx.db().entry(idx).lru;
        let freq = crate::evict::lfu_decayed(lru, ctx.now_ms, ctx.set.evict.decay_time);
        ctx.out.int(freq as i64);
    }
}

pub fn object_help(ctx: &mut Ctx) {
    super::command::reply_help(
        ctx,
        "OBJECT",
        &[
            "ENCODING <key>",
            "    Return the kind of internal representation used in order to store the value",
            "    associated with a <key>.",
            "FREQ <key>",
            "    Return the access frequency index of the <key>. The returned integer is",
            "    proportional to the logarithm of the recent access frequency of the key.",
            "IDLETIME <key>",
            "    Return the idle time of the <key>, that is the approximated number of",
            "    seconds elapsed since the last access to the key.",
            "REFCOUNT <key>",
            "    Return the number of references of the value associated with the specified",
            "    <key>.",
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::parse_cursor;

    #[test]
    fn cursor_parsing_is_strtoul() {
        assert_eq!(parse_cursor(b"0"), Some(0));
        assert_eq!(parse_cursor(b""), Some(0));
        assert_eq!(parse_cursor(b"+7"), Some(7));
        assert_eq!(parse_cursor(b"-1"), Some(u64::MAX));
        assert_eq!(parse_cursor(b" 1"), None);
        assert_eq!(parse_cursor(b"1x"), None);
        assert_eq!(parse_cursor(b"99999999999999999999999"), None);
    }
}
