//! Blocking list and sorted-set commands: BLPOP, BRPOP, BRPOPLPUSH, BLMOVE,
//! BLMPOP (and the sorted-set ones once their pops exist). Each has a
//! "try now" path and a `serve_*` function that `blocking::serve_ready`
//! calls on behalf of a waiter when one of its keys gets data.

use super::server::Suspend;
use super::{errors, Ctx, Replied, NOTIFY_GENERIC, NOTIFY_LIST};
use crate::blocking;
use crate::db::list::List;
use crate::db::Value;
use crate::sds::Sds;
use crate::util::{parse_f64, parse_i64};

/// Redis's `getTimeoutFromObjectOrReply(UNIT_SECONDS)`: absolute deadline in
/// ms, 0 for "forever"; replies the error and returns None when invalid.
pub fn parse_timeout(ctx: &mut Ctx, arg: &[u8]) -> Option<i64> {
    let Some(secs) = parse_f64(arg) else {
        ctx.err("timeout is not a float or out of range");
        return None;
    };
    // C's (long long)(x * 1000.0): out-of-range values become LLONG_MIN,
    // which Redis then reports as negative.
    let v = secs * 1000.0;
    let ms = if v > -9.2e18 && v < 9.2e18 {
        v as i64
    } else {
        i64::MIN
    };
    if ms < 0 {
        ctx.err("timeout is negative");
        return None;
    }
    if ms > 0 {
        if ms > i64::MAX - ctx.now_ms {
            ctx.err("timeout is out of range");
            return None;
        }
        return Some(ms + ctx.now_ms);
    }
    Some(0)
}

/// Blocks the client on `keys` until `deadline_ms` (0: forever), or, inside
/// EXEC, replies the timeout value at once as Redis does.
fn block_on(ctx: &mut Ctx, keys: Vec<Vec<u8>>, deadline_ms: i64, null_array: bool) {
    if ctx.s.in_exec {
        if null_array {
            ctx.out.null_array();
        } else {
            ctx.out.null();
        }
        return;
    }
    blocking::block(ctx.t, ctx.s, ctx.args, keys);
    ctx.suspend = Some(Suspend::Blocked {
        deadline_ms,
        null_array,
    });
}

/// The list at `key`: `Ok(None)` when missing, `Err` after WRONGTYPE.
fn list_at(ctx: &mut Ctx, key: &[u8]) -> Result<Option<u32>, Replied> {
    match ctx.lookup_write(key) {
        None => Ok(None),
        Some(idx) => match ctx.db().entry(idx).value {
            Value::List(_) => Ok(Some(idx)),
            _ => {
                ctx.wrongtype();
                Err(Replied)
            }
        },
    }
}

fn list_mut<'c>(ctx: &'c mut Ctx, idx: u32) -> Option<&'c mut List> {
    match &mut ctx.db().entry_mut(idx).value {
        Value::List(l) => Some(l),
        _ => None,
    }
}

/// Pops up to `count` elements from the list at `idx`, logging the effect
/// as LPOP/RPOP and deleting the key when it empties.
fn pop_n(ctx: &mut Ctx, key: &[u8], idx: u32, left: bool, count: usize) -> Vec<Sds> {
    let Some(l) = list_mut(ctx, idx) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(count.min(l.len()));
    for _ in 0..count {
        let v = if left {
            l.items.pop_front()
        } else {
            l.items.pop_back()
        };
        match v {
            Some(v) => out.push(v),
            None => break,
        }
    }
    let empty = l.is_empty();
    let cmd: &[u8] = if left { b"LPOP" } else { b"RPOP" };
    let n = out.len().to_string();
    ctx.propagate(&[cmd, key, n.as_bytes()]);
    ctx.notify(NOTIFY_LIST, if left { "lpop" } else { "rpop" }, key);
    if empty {
        ctx.db().remove_at(idx);
        ctx.notify(NOTIFY_GENERIC, "del", key);
    }
    out
}

/// BLPOP/BRPOP on one key: `Ok(true)` when it popped and replied.
fn try_pop(ctx: &mut Ctx, key: &[u8], left: bool) -> Result<bool, Replied> {
    let Some(idx) = list_at(ctx, key)? else {
        return Ok(false);
    };
    let v = pop_n(ctx, key, idx, left, 1);
    let Some(v) = v.first() else { return Ok(false) };
    ctx.out.array(2);
    ctx.out.bulk(key);
    ctx.out.bulk(v);
    Ok(true)
}

fn bpop(ctx: &mut Ctx, left: bool) {
    let n = ctx.args.len();
    let Some(deadline) = parse_timeout(ctx, ctx.args[n - 1]) else {
        return;
    };
    for i in 1..n - 1 {
        match try_pop(ctx, ctx.args[i], left) {
            Err(_) | Ok(true) => return,
            Ok(false) => {}
        }
    }
    let keys = ctx.args[1..n - 1].iter().map(|k| k.to_vec()).collect();
    block_on(ctx, keys, deadline, true);
}

pub fn blpop(ctx: &mut Ctx) {
    bpop(ctx, true)
}

pub fn brpop(ctx: &mut Ctx) {
    bpop(ctx, false)
}

fn serve_blpop(ctx: &mut Ctx, key: &[u8]) -> bool {
    try_pop(ctx, key, true).unwrap_or(false)
}

fn serve_brpop(ctx: &mut Ctx, key: &[u8]) -> bool {
    try_pop(ctx, key, false).unwrap_or(false)
}

/// LEFT/RIGHT argument.
fn side(a: &[u8]) -> Option<bool> {
    if a.eq_ignore_ascii_case(b"left") {
        Some(true)
    } else if a.eq_ignore_ascii_case(b"right") {
        Some(false)
    } else {
        None
    }
}

/// Moves one element from `src` to `dst` (Redis's `lmoveGenericCommand`);
/// `Ok(true)` when it moved and replied with the element.
fn try_move(
    ctx: &mut Ctx,
    src: &[u8],
    dst: &[u8],
    from_left: bool,
    to_left: bool,
) -> Result<bool, Replied> {
    let Some(sidx) = list_at(ctx, src)? else {
        return Ok(false);
    };
    // The destination must be a list (or absent) before anything moves.
    list_at(ctx, dst)?;
    let sidx = ctx.db().find(src).unwrap_or(sidx);
    let Some(l) = list_mut(ctx, sidx) else {
        return Ok(false);
    };
    let v = if from_left {
        l.items.pop_front()
    } else {
        l.items.pop_back()
    };
    let Some(v) = v else { return Ok(false) };
    let src_empty = l.is_empty();
    if src_empty {
        ctx.db().remove_at(sidx);
    }
    let didx = match ctx.db().find(dst) {
        Some(i) => i,
        None => ctx.set_key(dst, Value::List(Box::default()), false),
    };
    if let Some(dl) = list_mut(ctx, didx) {
        if to_left {
            dl.items.push_front(v.clone());
        } else {
            dl.items.push_back(v.clone());
        }
    }
    let (f, t): (&[u8], &[u8]) = (
        if from_left { b"LEFT" } else { b"RIGHT" },
        if to_left { b"LEFT" } else { b"RIGHT" },
    );
    ctx.propagate(&[b"LMOVE", src, dst, f, t]);
    ctx.notify(NOTIFY_LIST, if from_left { "lpop" } else { "rpop" }, src);
    if src_empty {
        ctx.notify(NOTIFY_GENERIC, "del", src);
    }
    ctx.notify(NOTIFY_LIST, if to_left { "lpush" } else { "rpush" }, dst);
    ctx.out.bulk(&v);
    Ok(true)
}

/// (src, dst, from_left, to_left, timeout arg index) of BLMOVE/BRPOPLPUSH.
fn move_args(ctx: &mut Ctx) -> Option<(bool, bool, usize)> {
    if ctx.spec.name == "brpoplpush" {
        return Some((false, true, 3));
    }
    let (Some(f), Some(t)) = (side(ctx.args[3]), side(ctx.args[4])) else {
        ctx.syntax_error();
        return None;
    };
    Some((f, t, 5))
}

fn bmove(ctx: &mut Ctx) {
    let Some((from, to, ti)) = move_args(ctx) else {
        return;
    };
    let Some(deadline) = parse_timeout(ctx, ctx.args[ti]) else {
        return;
    };
    let (src, dst) = (ctx.args[1], ctx.args[2]);
    match try_move(ctx, src, dst, from, to) {
        Err(_) | Ok(true) => {}
        Ok(false) => block_on(ctx, vec![src.to_vec()], deadline, false),
    }
}

pub fn blmove(ctx: &mut Ctx) {
    bmove(ctx)
}

pub fn brpoplpush(ctx: &mut Ctx) {
    bmove(ctx)
}

fn serve_bmove(ctx: &mut Ctx, key: &[u8]) -> bool {
    let Some((from, to, _)) = move_args(ctx) else {
        return false;
    };
    let dst = ctx.args[2];
    try_move(ctx, key, dst, from, to).unwrap_or(false)
}

/// Parsed `BLMPOP timeout numkeys key... LEFT|RIGHT [COUNT n]`.
struct Mpop {
    deadline: i64,
    keys: Vec<Vec<u8>>,
    left: bool,
    count: usize,
}

fn parse_blmpop(ctx: &mut Ctx) -> Option<Mpop> {
    let deadline = parse_timeout(ctx, ctx.args[1])?;
    let numkeys = match parse_i64(ctx.args[2]) {
        Some(n) if n > 0 => n as usize,
        Some(_) => {
            ctx.err("numkeys should be greater than 0");
            return None;
        }
        None => {
            ctx.err(errors::NOT_INTEGER);
            return None;
        }
    };
    let first = 3;
    if ctx.args.len() < first + numkeys + 1 {
        ctx.syntax_error();
        return None;
    }
    let keys = ctx.args[first..first + numkeys]
        .iter()
        .map(|k| k.to_vec())
        .collect();
    let Some(left) = side(ctx.args[first + numkeys]) else {
        ctx.syntax_error();
        return None;
    };
    let mut count = 1usize;
    let mut j = first + numkeys + 1;
    let mut seen_count = false;
    while j < ctx.args.len() {
        if ctx.args[j].eq_ignore_ascii_case(b"count") && j + 1 < ctx.args.len() && !seen_count {
            match parse_i64(ctx.args[j + 1]) {
                Some(c) if c > 0 => count = c as usize,
                _ => {
                    ctx.err("count should be greater than 0");
                    return None;
                }
            }
            seen_count = true;
            j += 2;
        } else {
            ctx.syntax_error();
            return None;
        }
    }
    Some(Mpop {
        deadline,
        keys,
        left,
        count,
    })
}

/// BLMPOP on one key: `Ok(true)` when it popped and replied.
fn try_mpop(ctx: &mut Ctx, key: &[u8], left: bool, count: usize) -> Result<bool, Replied> {
    let Some(idx) = list_at(ctx, key)? else {
        return Ok(false);
    };
    let vals = pop_n(ctx, key, idx, left, count);
    if vals.is_empty() {
        return Ok(false);
    }
    ctx.out.array(2);
    ctx.out.bulk(key);
    ctx.out.array(vals.len());
    for v in &vals {
        ctx.out.bulk(v);
    }
    Ok(true)
}

pub fn blmpop(ctx: &mut Ctx) {
    let Some(m) = parse_blmpop(ctx) else { return };
    for k in &m.keys {
        match try_mpop(ctx, k, m.left, m.count) {
            Err(_) | Ok(true) => return,
            Ok(false) => {}
        }
    }
    block_on(ctx, m.keys, m.deadline, true);
}

fn serve_blmpop(ctx: &mut Ctx, key: &[u8]) -> bool {
    let Some(m) = parse_blmpop(ctx) else {
        return false;
    };
    try_mpop(ctx, key, m.left, m.count).unwrap_or(false)
}

/// The serve function for a blocking command, by full name.
pub fn serve_fn(name: &str) -> Option<blocking::ServeFn> {
    Some(match name {
        "blpop" => serve_blpop,
        "brpop" => serve_brpop,
        "blmove" | "brpoplpush" => serve_bmove,
        "blmpop" => serve_blmpop,
        _ => return None,
    })
}

/// CLIENT UNBLOCK id [TIMEOUT|ERROR].
pub fn client_unblock(ctx: &mut Ctx) {
    let Some(id) = parse_i64(ctx.args[2]) else {
        return ctx.err(errors::NOT_INTEGER);
    };
    let error = match ctx.args.get(3) {
        None => false,
        Some(a) if a.eq_ignore_ascii_case(b"timeout") => false,
        Some(a) if a.eq_ignore_ascii_case(b"error") => true,
        Some(_) => return ctx.err("CLIENT UNBLOCK reason should be TIMEOUT or ERROR"),
    };
    let Some(b) = blocking::unblock(ctx.t, id as u64) else {
        return ctx.out.int(0);
    };
    let mut r = crate::resp::Reply::new(b.resp);
    if error {
        r.error("UNBLOCKED client unblocked via CLIENT UNBLOCK");
    } else {
        let name = b
            .args
            .first()
            .map(|a| a.to_ascii_lowercase())
            .unwrap_or_default();
        if name == b"brpoplpush" || name == b"blmove" {
            r.null();
        } else {
            r.null_array();
        }
    }
    b.info.push_bytes(&r.buf);
    b.info.unblocked.set(true);
    ctx.out.int(1);
}
