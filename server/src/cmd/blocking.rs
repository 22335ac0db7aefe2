//! Blocking list and sorted-set commands: BLPOP, BRPOP, BRPOPLPUSH, BLMOVE,
//! BLMPOP, BZPOPMIN, BZPOPMAX, BZMPOP. Each has a
//! "try now" path and a `serve_*` function that `blocking::serve_ready`
//! calls on behalf of a waiter when one of its keys gets data.

use super::list::{self, End, PopReply};
use super::server::Suspend;
use super::zset;
use super::{errors, Ctx};
use crate::blocking;
use crate::db::Kind;
use crate::util::{parse_i64, timeout_ms};

/// Redis's `getTimeoutFromObjectOrReply(UNIT_SECONDS)`: absolute deadline in
/// ms, 0 for "forever"; replies the error and returns None when invalid.
pub fn parse_timeout(ctx: &mut Ctx, arg: &[u8]) -> Option<i64> {
    let Some(ms) = timeout_ms(arg) else {
        ctx.err("timeout is not a float or out of range");
        return None;
    };
    deadline(ctx, ms)
}

/// The rest of `getTimeoutFromObjectOrReply`, once the timeout is in ms
/// (whatever unit it was given in): the absolute deadline, 0 for
/// "forever", or the error sent for a negative or too large one.
pub fn deadline(ctx: &mut Ctx, ms: i64) -> Option<i64> {
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

/// Blocks the client on `keys` until `deadline_ms` (0: forever); a timeout
/// replies a null array. Inside EXEC nothing blocks: the reply is at once a
/// null array, or a null bulk for BLMOVE/BRPOPLPUSH (`exec_null_array`
/// false), as Redis does.
fn block_on(ctx: &mut Ctx, keys: &[&[u8]], deadline_ms: i64, exec_null_array: bool) {
    if ctx.s.in_exec {
        if exec_null_array {
            ctx.out.null_array();
        } else {
            ctx.out.null();
        }
        return;
    }
    let keys = keys.iter().map(|k| k.to_vec()).collect();
    blocking::block(ctx.t, ctx.s, ctx.args, keys);
    ctx.suspend = Some(Suspend::Blocked { deadline_ms });
}

fn bpop(ctx: &mut Ctx, end: End) {
    let n = ctx.args.len();
    let Some(deadline) = parse_timeout(ctx, ctx.args[n - 1]) else {
        return;
    };
    let keys: Vec<&[u8]> = ctx.args[1..n - 1].to_vec();
    match list::pop_first(ctx, &keys, end, None, PopReply::KeyElem) {
        Err(_) | Ok(true) => {}
        Ok(false) => block_on(ctx, &keys, deadline, true),
    }
}

pub fn blpop(ctx: &mut Ctx) {
    bpop(ctx, End::Left)
}

pub fn brpop(ctx: &mut Ctx) {
    bpop(ctx, End::Right)
}

fn serve_blpop(ctx: &mut Ctx, key: &[u8]) -> bool {
    list::pop_first(ctx, &[key], End::Left, None, PopReply::KeyElem).unwrap_or(false)
}

fn serve_brpop(ctx: &mut Ctx, key: &[u8]) -> bool {
    list::pop_first(ctx, &[key], End::Right, None, PopReply::KeyElem).unwrap_or(false)
}

/// (from, to, timeout index, logged as RPOPLPUSH) of BLMOVE/BRPOPLPUSH.
fn move_args(ctx: &mut Ctx) -> Option<(End, End, usize, bool)> {
    if ctx.spec.name == "brpoplpush" {
        return Some((End::Right, End::Left, 3, true));
    }
    let (Some(f), Some(t)) = (End::parse(ctx.args[3]), End::parse(ctx.args[4])) else {
        ctx.syntax_error();
        return None;
    };
    Some((f, t, 5, false))
}

/// BLMOVE src dst from to timeout / BRPOPLPUSH src dst timeout.
fn bmove(ctx: &mut Ctx) {
    let Some((from, to, ti, rpoplpush)) = move_args(ctx) else {
        return;
    };
    let Some(deadline) = parse_timeout(ctx, ctx.args[ti]) else {
        return;
    };
    let (src, dst) = (ctx.args[1], ctx.args[2]);
    match list::lmove_generic(ctx, src, dst, from, to, rpoplpush) {
        Err(_) | Ok(true) => {}
        Ok(false) => block_on(ctx, &[src], deadline, false),
    }
}

pub fn blmove(ctx: &mut Ctx) {
    bmove(ctx)
}

pub fn brpoplpush(ctx: &mut Ctx) {
    bmove(ctx)
}

/// Serves a BLMOVE/BRPOPLPUSH waiter once its source list has data. A
/// destination of another type answers the waiter WRONGTYPE (and unblocks
/// it) with nothing moved, as Redis does.
fn serve_bmove(ctx: &mut Ctx, key: &[u8]) -> bool {
    let Some((from, to, _, rpoplpush)) = move_args(ctx) else {
        return false;
    };
    if !matches!(list::probe_write(ctx, key), list::Probe::List(_)) {
        return false;
    }
    let dst = ctx.args[2];
    !matches!(
        list::lmove_generic(ctx, key, dst, from, to, rpoplpush),
        Ok(false)
    )
}

/// BLMPOP timeout numkeys key... LEFT|RIGHT [COUNT n]: arguments first,
/// then the timeout, as Redis's `lmpopGenericCommand` checks them.
pub fn blmpop(ctx: &mut Ctx) {
    let Some(m) = list::parse_mpop(ctx, 2) else {
        return;
    };
    let Some(deadline) = parse_timeout(ctx, ctx.args[1]) else {
        return;
    };
    let keys: Vec<&[u8]> = ctx.args[m.first_key..m.first_key + m.numkeys].to_vec();
    match list::pop_first(ctx, &keys, m.end, Some(m.count), PopReply::KeyArray) {
        Err(_) | Ok(true) => {}
        Ok(false) => block_on(ctx, &keys, deadline, true),
    }
}

fn serve_blmpop(ctx: &mut Ctx, key: &[u8]) -> bool {
    let Some(m) = list::parse_mpop(ctx, 2) else {
        return false;
    };
    list::pop_first(ctx, &[key], m.end, Some(m.count), PopReply::KeyArray).unwrap_or(false)
}

/// The sorted-set blocking pops after argument parsing (Redis's
/// `blockingGenericZpopCommand`): pop from the first existing key (WRONGTYPE
/// on the first of another type), or block. `count` -1 with a flat reply
/// is BZPOPMIN/BZPOPMAX, else BZMPOP's nested reply.
fn zpop_or_block(ctx: &mut Ctx, keys: &[&[u8]], deadline: i64, max: bool, count: i64) {
    match zset::first_zset_key(ctx, keys) {
        Err(_) => {}
        Ok(Some(i)) => {
            serve_zpop(ctx, keys[i], max, count);
        }
        Ok(None) => block_on(ctx, keys, deadline, true),
    }
}

/// Pops for a waiter (or the immediate path) once `key` holds a sorted set.
fn serve_zpop(ctx: &mut Ctx, key: &[u8], max: bool, count: i64) -> bool {
    if zset::zset_len(ctx, key).unwrap_or(0) == 0 {
        return false;
    }
    let nested = count != -1;
    zset::pop_generic(ctx, &[key], max, true, count, nested, nested);
    true
}

/// BZPOPMIN/BZPOPMAX key... timeout: timeout first, then the keys.
fn bzpop(ctx: &mut Ctx, max: bool) {
    let n = ctx.args.len();
    let Some(deadline) = parse_timeout(ctx, ctx.args[n - 1]) else {
        return;
    };
    let keys: Vec<&[u8]> = ctx.args[1..n - 1].to_vec();
    zpop_or_block(ctx, &keys, deadline, max, -1);
}

pub fn bzpopmin(ctx: &mut Ctx) {
    bzpop(ctx, false)
}

pub fn bzpopmax(ctx: &mut Ctx) {
    bzpop(ctx, true)
}

fn serve_bzpopmin(ctx: &mut Ctx, key: &[u8]) -> bool {
    serve_zpop(ctx, key, false, -1)
}

fn serve_bzpopmax(ctx: &mut Ctx, key: &[u8]) -> bool {
    serve_zpop(ctx, key, true, -1)
}

/// BZMPOP timeout numkeys key... MIN|MAX [COUNT n]: arguments, then timeout.
pub fn bzmpop(ctx: &mut Ctx) {
    let Some(m) = zset::parse_mpop(ctx, 2) else {
        return;
    };
    let Some(deadline) = parse_timeout(ctx, ctx.args[1]) else {
        return;
    };
    let keys: Vec<&[u8]> = ctx.args[m.keys].to_vec();
    zpop_or_block(ctx, &keys, deadline, m.max, m.count);
}

fn serve_bzmpop(ctx: &mut Ctx, key: &[u8]) -> bool {
    let Some(m) = zset::parse_mpop(ctx, 2) else {
        return false;
    };
    serve_zpop(ctx, key, m.max, m.count)
}

/// How a blocking command waits: the function that serves it once a key
/// it waits on changes, the type of key it serves from, and whether
/// serving takes the data (a pop: the waiters after it then find nothing)
/// or not (a stream read).
#[derive(Clone, Copy)]
pub struct Waiter {
    pub serve: blocking::ServeFn,
    pub kind: Kind,
    pub consumes: bool,
}

/// The blocking command `name` (its full name) as a [`Waiter`].
pub fn waiter(name: &str) -> Option<Waiter> {
    let pop = |serve, kind| Waiter {
        serve,
        kind,
        consumes: true,
    };
    Some(match name {
        "blpop" => pop(serve_blpop, Kind::List),
        "brpop" => pop(serve_brpop, Kind::List),
        "blmove" | "brpoplpush" => pop(serve_bmove, Kind::List),
        "blmpop" => pop(serve_blmpop, Kind::List),
        "bzpopmin" => pop(serve_bzpopmin, Kind::ZSet),
        "bzpopmax" => pop(serve_bzpopmax, Kind::ZSet),
        "bzmpop" => pop(serve_bzmpop, Kind::ZSet),
        "xread" => Waiter {
            serve: super::stream::serve_xread,
            kind: Kind::Stream,
            consumes: false,
        },
        // (A group's reader that finds nothing new for its group holds up
        // no reader of another group.)
        "xreadgroup" => Waiter {
            serve: super::stream::group::serve_xreadgroup,
            kind: Kind::Stream,
            consumes: false,
        },
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
        r.null_array();
    }
    b.info.push_bytes(&r.buf);
    b.info.unblocked.set(true);
    ctx.out.int(1);
}
