//! String commands (Redis's t_string.c): GET/SET and friends, counters,
//! ranges, LCS.

use super::{errors, Ctx, NOTIFY_GENERIC, NOTIFY_STRING};
use crate::db::{Value, NO_EXPIRE};
use crate::util::{fmt_i64, ld_incr, parse_i64, LdIncrError};

const SET_NX: u32 = 1;
const SET_XX: u32 = 1 << 1;
const SET_GET: u32 = 1 << 2;
const SET_KEEPTTL: u32 = 1 << 3;
const SET_PERSIST: u32 = 1 << 4;
const SET_EX: u32 = 1 << 5;
const SET_PX: u32 = 1 << 6;
const SET_EXAT: u32 = 1 << 7;
const SET_PXAT: u32 = 1 << 8;
const ANY_EXPIRE: u32 = SET_EX | SET_PX | SET_EXAT | SET_PXAT;

#[derive(PartialEq, Eq, Clone, Copy)]
enum Kind {
    Set,
    Get,
}

/// Redis's `parseExtendedStringArgumentsOrReply` for SET and GETEX.
/// Returns the flags and the index of the expire argument.
fn parse_extended(ctx: &mut Ctx, from: usize, kind: Kind) -> Option<(u32, Option<usize>)> {
    let mut flags = 0u32;
    let mut expire = None;
    let args = ctx.args;
    let mut j = from;
    while j < args.len() {
        let opt = args[j];
        let has_next = j + 1 < args.len();
        let is = |s: &str| opt.eq_ignore_ascii_case(s.as_bytes());
        if is("nx") && flags & SET_XX == 0 && kind == Kind::Set {
            flags |= SET_NX;
        } else if is("xx") && flags & SET_NX == 0 && kind == Kind::Set {
            flags |= SET_XX;
        } else if is("get") && kind == Kind::Set {
            flags |= SET_GET;
        } else if is("keepttl")
            && flags & SET_PERSIST == 0
            && flags & ANY_EXPIRE == 0
            && kind == Kind::Set
        {
            flags |= SET_KEEPTTL;
        } else if is("persist")
            && kind == Kind::Get
            && flags & ANY_EXPIRE == 0
            && flags & SET_KEEPTTL == 0
        {
            flags |= SET_PERSIST;
        } else if is("ex")
            && flags & (SET_KEEPTTL | SET_PERSIST | SET_EXAT | SET_PX | SET_PXAT) == 0
            && has_next
        {
            flags |= SET_EX;
            expire = Some(j + 1);
            j += 1;
        } else if is("px")
            && flags & (SET_KEEPTTL | SET_PERSIST | SET_EX | SET_EXAT | SET_PXAT) == 0
            && has_next
        {
            flags |= SET_PX;
            expire = Some(j + 1);
            j += 1;
        } else if is("exat")
            && flags & (SET_KEEPTTL | SET_PERSIST | SET_EX | SET_PX | SET_PXAT) == 0
            && has_next
        {
            flags |= SET_EXAT;
            expire = Some(j + 1);
            j += 1;
        } else if is("pxat")
            && flags & (SET_KEEPTTL | SET_PERSIST | SET_EX | SET_EXAT | SET_PX) == 0
            && has_next
        {
            flags |= SET_PXAT;
            expire = Some(j + 1);
            j += 1;
        } else {
            ctx.syntax_error();
            return None;
        }
        j += 1;
    }
    Some((flags, expire))
}

/// Redis's `addReplyErrorExpireTime`.
fn invalid_expire(ctx: &mut Ctx) {
    let msg = format!("invalid expire time in '{}' command", ctx.spec.name);
    ctx.err(&msg);
}

/// Redis's `getExpireMillisecondsOrReply`: absolute ms or an error reply.
fn expire_ms(ctx: &mut Ctx, arg: &[u8], flags: u32) -> Option<i64> {
    let Some(v) = parse_i64(arg) else {
        ctx.err(errors::NOT_INTEGER);
        return None;
    };
    let seconds = flags & (SET_EX | SET_EXAT) != 0;
    if v <= 0 || (seconds && v > i64::MAX / 1000) {
        invalid_expire(ctx);
        return None;
    }
    let mut ms = if seconds { v * 1000 } else { v };
    if flags & (SET_EX | SET_PX) != 0 {
        ms = ms.wrapping_add(ctx.now_ms);
    }
    if ms <= 0 {
        invalid_expire(ctx);
        return None;
    }
    Some(ms)
}

/// Replies the string value of `idx` as a bulk.
fn reply_value(ctx: &mut Ctx, idx: u32) {
    let db = ctx.s.db;
    let v = ctx.t.ks.dbs[db].entry(idx).value.as_str().unwrap_or(b"");
    ctx.out.bulk(v);
}

pub fn get(ctx: &mut Ctx) {
    let key = ctx.args[1];
    match ctx.get_str(key) {
        Ok(Some(idx)) => reply_value(ctx, idx),
        Ok(None) => ctx.out.null(),
        Err(_) => {}
    }
}

/// The shared body of SET, SETNX, SETEX, PSETEX (`setGenericCommand`).
/// `expire` is an absolute ms time already validated.
fn set_generic(
    ctx: &mut Ctx,
    flags: u32,
    key: &[u8],
    val: &[u8],
    expire: Option<i64>,
    nx_reply: Option<(i64, i64)>,
) {
    if flags & SET_GET != 0 {
        match ctx.get_str(key) {
            Ok(Some(idx)) => reply_value(ctx, idx),
            Ok(None) => ctx.out.null(),
            Err(_) => return,
        }
    }
    let found = ctx.lookup_write(key).is_some();
    if (flags & SET_NX != 0 && found) || (flags & SET_XX != 0 && !found) {
        if flags & SET_GET == 0 {
            match nx_reply {
                Some((_, abort)) => ctx.out.int(abort),
                None => ctx.out.null(),
            }
        }
        return;
    }
    let idx = ctx.set_key(key, Value::from_bytes(val), flags & SET_KEEPTTL != 0);
    ctx.notify(NOTIFY_STRING, "set", key);
    if let Some(at) = expire {
        ctx.db().set_expire(idx, at);
        ctx.notify(NOTIFY_GENERIC, "expire", key);
        let mut b = [0u8; 20];
        ctx.propagate(&[b"SET", key, val, b"PXAT", fmt_i64(at, &mut b)]);
    } else if flags & SET_KEEPTTL != 0 {
        ctx.propagate(&[b"SET", key, val, b"KEEPTTL"]);
    } else {
        ctx.propagate(&[b"SET", key, val]);
    }
    if flags & SET_GET == 0 {
        match nx_reply {
            Some((ok, _)) => ctx.out.int(ok),
            None => ctx.out.ok(),
        }
    }
}

pub fn set(ctx: &mut Ctx) {
    let Some((flags, exp)) = parse_extended(ctx, 3, Kind::Set) else {
        return;
    };
    let expire = match exp {
        Some(i) => match expire_ms(ctx, ctx.args[i], flags) {
            Some(ms) => Some(ms),
            None => return,
        },
        None => None,
    };
    let (key, val) = (ctx.args[1], ctx.args[2]);
    set_generic(ctx, flags, key, val, expire, None);
}

pub fn setnx(ctx: &mut Ctx) {
    let (key, val) = (ctx.args[1], ctx.args[2]);
    set_generic(ctx, SET_NX, key, val, None, Some((1, 0)));
}

pub fn setex(ctx: &mut Ctx) {
    let Some(ms) = expire_ms(ctx, ctx.args[2], SET_EX) else {
        return;
    };
    let (key, val) = (ctx.args[1], ctx.args[3]);
    set_generic(ctx, SET_EX, key, val, Some(ms), None);
}

pub fn psetex(ctx: &mut Ctx) {
    let Some(ms) = expire_ms(ctx, ctx.args[2], SET_PX) else {
        return;
    };
    let (key, val) = (ctx.args[1], ctx.args[3]);
    set_generic(ctx, SET_PX, key, val, Some(ms), None);
}

pub fn getex(ctx: &mut Ctx) {
    let Some((flags, exp)) = parse_extended(ctx, 2, Kind::Get) else {
        return;
    };
    let key = ctx.args[1];
    let idx = match ctx.get_str(key) {
        Ok(Some(idx)) => idx,
        Ok(None) => return ctx.out.null(),
        Err(_) => return,
    };
    // Redis validates the expire only once the key is known to exist.
    let expire = match exp {
        Some(i) => match expire_ms(ctx, ctx.args[i], flags) {
            Some(ms) => Some(ms),
            None => return,
        },
        None => None,
    };
    reply_value(ctx, idx);
    if let Some(at) = expire {
        if ctx.already_expired(at) {
            ctx.db().remove_at(idx);
            ctx.propagate(&[b"DEL", key]);
            ctx.notify(NOTIFY_GENERIC, "del", key);
        } else {
            ctx.db().set_expire(idx, at);
            let mut b = [0u8; 20];
            ctx.propagate(&[b"PEXPIREAT", key, fmt_i64(at, &mut b)]);
            ctx.notify(NOTIFY_GENERIC, "expire", key);
        }
    } else if flags & SET_PERSIST != 0 && ctx.db().entry(idx).expire_at != NO_EXPIRE {
        ctx.db().set_expire(idx, NO_EXPIRE);
        ctx.propagate(&[b"PERSIST", key]);
        ctx.notify(NOTIFY_GENERIC, "persist", key);
    }
}

pub fn getdel(ctx: &mut Ctx) {
    let key = ctx.args[1];
    match ctx.get_str(key) {
        Ok(Some(idx)) => {
            reply_value(ctx, idx);
            ctx.db().remove_at(idx);
            ctx.propagate(&[b"DEL", key]);
            ctx.notify(NOTIFY_GENERIC, "del", key);
        }
        Ok(None) => ctx.out.null(),
        Err(_) => {}
    }
}

pub fn getset(ctx: &mut Ctx) {
    let (key, val) = (ctx.args[1], ctx.args[2]);
    match ctx.get_str(key) {
        Ok(Some(idx)) => reply_value(ctx, idx),
        Ok(None) => ctx.out.null(),
        Err(_) => return,
    }
    ctx.set_key(key, Value::from_bytes(val), false);
    ctx.notify(NOTIFY_STRING, "set", key);
    ctx.propagate(&[b"SET", key, val]);
}

pub fn mget(ctx: &mut Ctx) {
    let n = ctx.args.len() - 1;
    ctx.out.array(n);
    for i in 1..=n {
        let key = ctx.args[i];
        match ctx.lookup_read(key) {
            Some(idx) => match ctx.db().entry(idx).value.as_str() {
                Some(_) => reply_value(ctx, idx),
                None => ctx.out.null(),
            },
            None => ctx.out.null(),
        }
    }
}

fn mset_generic(ctx: &mut Ctx, nx: bool) {
    if ctx.args.len().is_multiple_of(2) {
        let msg = format!("wrong number of arguments for '{}' command", ctx.spec.name);
        return ctx.err(&msg);
    }
    if nx {
        for i in (1..ctx.args.len()).step_by(2) {
            if ctx.lookup_write(ctx.args[i]).is_some() {
                return ctx.out.int(0);
            }
        }
    }
    for i in (1..ctx.args.len()).step_by(2) {
        let (k, v) = (ctx.args[i], ctx.args[i + 1]);
        ctx.set_key(k, Value::from_bytes(v), false);
        ctx.notify(NOTIFY_STRING, "set", k);
    }
    ctx.propagate_as_is();
    if nx {
        ctx.out.int(1);
    } else {
        ctx.out.ok();
    }
}

pub fn mset(ctx: &mut Ctx) {
    mset_generic(ctx, false)
}

pub fn msetnx(ctx: &mut Ctx) {
    mset_generic(ctx, true)
}

fn max_string(ctx: &Ctx) -> i64 {
    ctx.set.max_bulk_len
}

/// Redis's `checkStringLength`.
fn check_len(ctx: &mut Ctx, total: i64) -> bool {
    if total > max_string(ctx) {
        ctx.err("string exceeds maximum allowed size (proto-max-bulk-len)");
        return false;
    }
    true
}

pub fn append(ctx: &mut Ctx) {
    let (key, add) = (ctx.args[1], ctx.args[2]);
    let newlen = match ctx.lookup_write(key) {
        None => {
            ctx.set_key(key, Value::from_bytes(add), false);
            add.len()
        }
        Some(idx) => {
            let cur = match ctx.db().entry(idx).value.as_str() {
                Some(s) => s.len(),
                None => return ctx.wrongtype(),
            };
            if !check_len(ctx, (cur + add.len()) as i64) {
                return;
            }
            let Some(v) = ctx.db().entry_mut(idx).value.str_mut_raw() else {
                return ctx.wrongtype();
            };
            v.extend_from_slice(add);
            v.len()
        }
    };
    ctx.propagate_as_is();
    ctx.notify(NOTIFY_STRING, "append", key);
    ctx.out.int(newlen as i64);
}

pub fn strlen(ctx: &mut Ctx) {
    let key = ctx.args[1];
    match ctx.get_str(key) {
        Ok(Some(idx)) => {
            let n = ctx.db().entry(idx).value.as_str().map_or(0, |s| s.len());
            ctx.out.int(n as i64)
        }
        Ok(None) => ctx.out.int(0),
        Err(_) => {}
    }
}

pub fn getrange(ctx: &mut Ctx) {
    let Some(mut start) = ctx.arg_i64(2) else {
        return;
    };
    let Some(mut end) = ctx.arg_i64(3) else {
        return;
    };
    let key = ctx.args[1];
    let idx = match ctx.get_str(key) {
        Ok(Some(idx)) => idx,
        Ok(None) => return ctx.out.bulk(b""),
        Err(_) => return,
    };
    let db = ctx.s.db;
    let s = ctx.t.ks.dbs[db].entry(idx).value.as_str().unwrap_or(b"");
    let len = s.len() as i64;
    if start < 0 && end < 0 && start > end {
        return ctx.out.bulk(b"");
    }
    if start < 0 {
        start += len;
    }
    if end < 0 {
        end += len;
    }
    start = start.max(0);
    end = end.max(0);
    if end >= len {
        end = len - 1;
    }
    if start > end || len == 0 {
        ctx.out.bulk(b"");
    } else {
        ctx.out.bulk(&s[start as usize..=end as usize]);
    }
}

pub fn setrange(ctx: &mut Ctx) {
    let key = ctx.args[1];
    let val = ctx.args[3];
    let Some(offset) = parse_i64(ctx.args[2]) else {
        return ctx.err(errors::NOT_INTEGER);
    };
    if offset < 0 {
        return ctx.err("offset is out of range");
    }
    let idx = match ctx.lookup_write(key) {
        None => {
            if val.is_empty() {
                return ctx.out.int(0);
            }
            if !check_len(ctx, offset.saturating_add(val.len() as i64)) {
                return;
            }
            ctx.set_key(key, Value::from_bytes(b""), false)
        }
        Some(idx) => {
            let Some(cur) = ctx.db().entry(idx).value.as_str() else {
                return ctx.wrongtype();
            };
            let olen = cur.len() as i64;
            if val.is_empty() {
                return ctx.out.int(olen);
            }
            if !check_len(ctx, offset.saturating_add(val.len() as i64)) {
                return;
            }
            idx
        }
    };
    let Some(v) = ctx.db().entry_mut(idx).value.str_mut_raw() else {
        return ctx.wrongtype();
    };
    let end = offset as usize + val.len();
    if v.len() < end {
        v.resize(end, 0);
    }
    v[offset as usize..end].copy_from_slice(val);
    let n = v.len() as i64;
    ctx.propagate_as_is();
    ctx.notify(NOTIFY_STRING, "setrange", key);
    ctx.out.int(n);
}

/// `incrDecrCommand`.
fn incr_decr(ctx: &mut Ctx, incr: i64) {
    let key = ctx.args[1];
    let (idx, old) = match ctx.lookup_write(key) {
        None => (None, 0),
        Some(idx) => match ctx.db().entry(idx).value.as_str() {
            None => return ctx.wrongtype(),
            Some(s) => match parse_i64(s) {
                Some(v) => (Some(idx), v),
                None => return ctx.err(errors::NOT_INTEGER),
            },
        },
    };
    let Some(new) = old.checked_add(incr) else {
        return ctx.err("increment or decrement would overflow");
    };
    match idx {
        Some(idx) => {
            // Keeps the TTL, as Redis's in-place update does.
            ctx.db().entry_mut(idx).value = Value::from_i64(new);
        }
        None => {
            ctx.set_key(key, Value::from_i64(new), false);
        }
    }
    ctx.propagate_as_is();
    ctx.notify(NOTIFY_STRING, "incrby", key);
    ctx.out.int(new);
}

pub fn incr(ctx: &mut Ctx) {
    incr_decr(ctx, 1)
}

pub fn decr(ctx: &mut Ctx) {
    incr_decr(ctx, -1)
}

pub fn incrby(ctx: &mut Ctx) {
    if let Some(n) = ctx.arg_i64(2) {
        incr_decr(ctx, n)
    }
}

pub fn decrby(ctx: &mut Ctx) {
    let Some(n) = ctx.arg_i64(2) else { return };
    if n == i64::MIN {
        return ctx.err("decrement would overflow");
    }
    incr_decr(ctx, -n)
}

pub fn incrbyfloat(ctx: &mut Ctx) {
    let key = ctx.args[1];
    let incr = ctx.args[2];
    let idx = ctx.lookup_write(key);
    let cur: Option<Vec<u8>> = match idx {
        None => None,
        Some(i) => match ctx.db().entry(i).value.as_str() {
            None => return ctx.wrongtype(),
            Some(s) => Some(s.to_vec()),
        },
    };
    match ld_incr(cur.as_deref(), incr) {
        Err(LdIncrError::CurrentNotFloat) | Err(LdIncrError::IncrNotFloat) => {
            ctx.err(errors::NOT_FLOAT)
        }
        Err(LdIncrError::NanOrInf) => ctx.err("increment would produce NaN or Infinity"),
        Ok(newv) => {
            match idx {
                Some(i) => ctx.db().entry_mut(i).value = Value::plain(&newv),
                None => {
                    ctx.set_key(key, Value::plain(&newv), false);
                }
            }
            // Logged as its result, so replicas never redo float math.
            ctx.propagate(&[b"SET", key, &newv, b"KEEPTTL"]);
            ctx.notify(NOTIFY_STRING, "incrbyfloat", key);
            ctx.out.bulk(&newv);
        }
    }
}

/// LCS key1 key2 [LEN] [IDX] [MINMATCHLEN len] [WITHMATCHLEN]
/// (a direct port of Redis's `lcsCommand`, including its check order).
pub fn lcs(ctx: &mut Ctx) {
    let mut strs: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut wrong = false;
    for (k, slot) in strs.iter_mut().enumerate() {
        let key = ctx.args[1 + k];
        if let Some(idx) = ctx.lookup_read(key) {
            match ctx.db().entry(idx).value.as_str() {
                Some(s) => *slot = s.to_vec(),
                None => wrong = true,
            }
        }
    }
    if wrong {
        return ctx.err("The specified keys must contain string values");
    }
    let (mut getlen, mut getidx, mut withmatchlen) = (false, false, false);
    let mut minmatchlen: i64 = 0;
    let mut j = 3;
    while j < ctx.args.len() {
        let opt = ctx.args[j];
        let more = ctx.args.len() - 1 - j;
        if opt.eq_ignore_ascii_case(b"IDX") {
            getidx = true;
        } else if opt.eq_ignore_ascii_case(b"LEN") {
            getlen = true;
        } else if opt.eq_ignore_ascii_case(b"WITHMATCHLEN") {
            withmatchlen = true;
        } else if opt.eq_ignore_ascii_case(b"MINMATCHLEN") && more > 0 {
            let Some(v) = ctx.arg_i64(j + 1) else { return };
            minmatchlen = v.max(0);
            j += 1;
        } else {
            return ctx.syntax_error();
        }
        j += 1;
    }
    if getidx && getlen {
        return ctx.err("If you want both the length and indexes, please just use IDX.");
    }
    let (a, b) = (&strs[0], &strs[1]);
    let (alen, blen) = (a.len(), b.len());
    let cells = (alen as u128 + 1) * (blen as u128 + 1);
    if cells * 4 > max_string(ctx) as u128 {
        return ctx.err("Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len");
    }
    let w = blen + 1;
    let mut dp = vec![0u32; (alen + 1) * w];
    for i in 1..=alen {
        for jj in 1..=blen {
            dp[i * w + jj] = if a[i - 1] == b[jj - 1] {
                dp[(i - 1) * w + jj - 1] + 1
            } else {
                dp[(i - 1) * w + jj].max(dp[i * w + jj - 1])
            };
        }
    }
    let total = dp[alen * w + blen] as usize;
    let computelcs = getidx || !getlen;
    let mut result = vec![0u8; if computelcs { total } else { 0 }];
    let mut idx = total;
    let mut matches: Vec<[usize; 4]> = Vec::new();
    // `arange_start == alen` means "no range in progress", as in Redis.
    let (mut arange_start, mut arange_end, mut brange_start, mut brange_end) =
        (alen, 0usize, 0usize, 0usize);
    let (mut i, mut jj) = (alen, blen);
    while computelcs && i > 0 && jj > 0 {
        let mut emit = false;
        if a[i - 1] == b[jj - 1] {
            result[idx - 1] = a[i - 1];
            if arange_start == alen {
                arange_start = i - 1;
                arange_end = i - 1;
                brange_start = jj - 1;
                brange_end = jj - 1;
            } else if arange_start == i && brange_start == jj {
                arange_start -= 1;
                brange_start -= 1;
            } else {
                emit = true;
            }
            if arange_start == 0 || brange_start == 0 {
                emit = true;
            }
            idx -= 1;
            i -= 1;
            jj -= 1;
        } else {
            if dp[(i - 1) * w + jj] > dp[i * w + jj - 1] {
                i -= 1;
            } else {
                jj -= 1;
            }
            if arange_start != alen {
                emit = true;
            }
        }
        if emit {
            let match_len = arange_end.wrapping_sub(arange_start).wrapping_add(1);
            if minmatchlen == 0 || match_len as i64 >= minmatchlen {
                matches.push([arange_start, arange_end, brange_start, brange_end]);
            }
            arange_start = alen;
        }
    }
    if getidx {
        ctx.out.map(2);
        ctx.out.bulk(b"matches");
        ctx.out.array(matches.len());
        for m in &matches {
            ctx.out.array(2 + withmatchlen as usize);
            ctx.out.array(2);
            ctx.out.int(m[0] as i64);
            ctx.out.int(m[1] as i64);
            ctx.out.array(2);
            ctx.out.int(m[2] as i64);
            ctx.out.int(m[3] as i64);
            if withmatchlen {
                ctx.out.int((m[1] - m[0] + 1) as i64);
            }
        }
        ctx.out.bulk(b"len");
        ctx.out.int(total as i64);
    } else if getlen {
        ctx.out.int(total as i64);
    } else {
        ctx.out.bulk(&result);
    }
}
